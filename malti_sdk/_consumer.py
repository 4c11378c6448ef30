"""Who called: consumer and context of a request, and IP addresses as consumers.

Same rules as the original package: ``request.state.malti_consumer``, then the
``x-consumer-id``, ``x-user-id``, ``consumer-id``, ``user-id`` headers (first match in
that order), then, when enabled, the leftmost valid ``X-Forwarded-For`` address or the
client address, optionally anonymised; else ``"anonymous"``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

ANONYMOUS = "anonymous"

# header name -> priority (lower wins); x-forwarded-for is only used in IP mode.
# Not to be changed at run time: the compiled request path copies it when set up.
_CONSUMER_HEADERS = {b"x-consumer-id": 0, b"x-user-id": 1, b"consumer-id": 2, b"user-id": 3}
_FORWARDED_FOR = b"x-forwarded-for"
_IP_MODE_HEADERS = {**_CONSUMER_HEADERS, _FORWARDED_FOR: 4}

_ip_cache: dict[tuple[str, bool], str | None] = {}
_IP_CACHE_LIMIT = 10_000


def is_valid_ip(text: str) -> bool:
    """True for a valid IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def extract_ip_from_forwarded_for(header: str) -> str | None:
    """The leftmost address of an ``X-Forwarded-For`` value, or None when it is not a valid IP."""
    if not header:
        return None
    first = header.split(",", 1)[0].strip()
    return first if is_valid_ip(first) else None


def anonymize_ip(text: str) -> str:
    """Mask an address as the original package documents it.

    IPv4 keeps three octets (``192.168.1.100`` -> ``192.168.1.xxx``); IPv6 keeps the
    first 64 bits (``2001:db8:85a3:8d3:1319:8a2e:370:7348`` ->
    ``2001:db8:85a3:8d3:xxxx:xxxx:xxxx:xxxx``), without a zone index. Anything else is
    returned unchanged.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv4Address):
        return str(address).rsplit(".", 1)[0] + ".xxx"
    # The 64-bit prefix from the integer: a zone (``fe80::1%eth0``) is dropped with the
    # interface bits (the original returned scoped addresses unmasked).
    prefix = int(address) >> 64
    groups = [format((prefix >> shift) & 0xFFFF, "x") for shift in (48, 32, 16, 0)]
    return ":".join(groups + ["xxxx"] * 4)


def _ip_consumer(candidate: str, anonymize: bool, must_validate: bool) -> str | None:
    key = (candidate, anonymize)
    try:
        return _ip_cache[key]
    except KeyError:
        pass
    if must_validate and not is_valid_ip(candidate):
        result = None
    else:
        result = anonymize_ip(candidate) if anonymize else candidate
    if len(_ip_cache) >= _IP_CACHE_LIMIT:
        _ip_cache.clear()
    _ip_cache[key] = result
    return result


def consumer_from_scope(scope: dict, use_ip: bool, anonymize: bool) -> Any:
    """The consumer of a finished request: a str, or the raw header value (bytes)."""
    state = scope.get("state")
    if state:
        consumer = state.get("malti_consumer")
        if consumer is not None:
            return str(consumer) or ANONYMOUS  # empty, like an empty header: no one in particular
    best = None
    rank = 9
    names = _IP_MODE_HEADERS if use_ip else _CONSUMER_HEADERS
    for name, value in scope["headers"]:
        found = names.get(name)
        if found is not None and found < rank:
            best = value
            rank = found
    if rank < 4:
        return best or ANONYMOUS
    if use_ip:
        if best is not None:
            ip = _ip_consumer(best.decode("latin-1").split(",", 1)[0].strip(), anonymize, True)
            if ip:
                return ip
        client = scope.get("client")
        if client and client[0]:
            return _ip_consumer(str(client[0]), anonymize, False)
    return ANONYMOUS


def context_from_scope(scope: dict) -> str | None:
    """``request.state.malti_context`` (the original's code) or ``request.state.context`` (its README).

    ``context`` counts only as a string: lifespan state is copied into every request, and
    an app's own ``context`` object there must not become every request's context.
    """
    state = scope.get("state")
    if state:
        context = state.get("malti_context")
        if context is not None:
            return str(context)
        context = state.get("context")
        if isinstance(context, str):
            return context
    return None
