"""Route patterns: which declared route served a request, with every mount prefix.

Starlette's router leaves the innermost matched route in ``scope["route"]`` (each
router level overwrites it, Mounts included). A route object does not know the
prefixes of the Mounts, sub-applications and FastAPI routers above it, so this module
walks the application's route tree once and indexes every route object by identity
with its full pattern. Per request, resolving is one dict lookup. A route object
reachable under several prefixes (one router mounted twice) is disambiguated by
matching the path against each full pattern, memoised in a bounded table.

Requests no route matched are recorded as :data:`UNMATCHED`, never with their raw
path: raw paths of scanners and typos would flood the endpoint list and may carry
personal data.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterable

UNMATCHED = "<unmatched>"

_PARAMETER = re.compile(r"{(\w+)")

_REBUILD_EVERY = 1.0  # seconds: an unknown route object triggers at most one re-index per second
_AMBIGUOUS_CACHE_LIMIT = 4096


class _Candidate:
    __slots__ = ("pattern", "regex")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.regex: Any = None

    def matches(self, path: str) -> bool:
        if self.regex is None:
            from starlette.routing import compile_path

            try:
                self.regex = compile_path(self.pattern)[0]
            except Exception:  # an exotic pattern we cannot compile: never matches
                self.regex = False
        return bool(self.regex) and self.regex.match(path) is not None


def _find_routes(app: Any) -> Any:
    """The route list of an ASGI app, looking through middleware (``.app``) wrappers."""
    seen = 0
    while app is not None and seen < 64:
        routes = getattr(app, "routes", None)
        if isinstance(routes, list):
            return routes
        router = getattr(app, "router", None)
        if router is not None and isinstance(getattr(router, "routes", None), list):
            return router.routes
        app = getattr(app, "app", None)
        seen += 1
    return None


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix or "/"
    return prefix + path


class RouteResolver:
    """Maps the route a request matched to its full pattern (``/api/v2/posts/{post_id}``)."""

    def __init__(self, app: Any, on_rebuild: Any = None) -> None:
        self._app = app
        self._on_rebuild = on_rebuild  # called after each rebuild (the index dict is replaced)
        # Once assigned, an index dict is never changed: a rebuild makes a new one. The
        # compiled request path relies on that (it remembers look-ups per index object).
        # id(route object) -> (route object, pattern | list of candidates | None for "no pattern")
        self._index: dict[int, tuple[Any, Any]] = {}
        self._built_at = float("-inf")
        self._ambiguous: dict[tuple[int, str], str] = {}

    # ------------------------------------------------------------------ index
    def rebuild(self) -> None:
        """Walk the application's route tree and index every route object."""
        index: dict[int, tuple[Any, Any]] = {}
        routes = _find_routes(self._app)
        if routes is not None:
            self._walk(routes, "", index, depth=0)
        self._index = index
        self._ambiguous = {}
        self._built_at = time.monotonic()
        if self._on_rebuild is not None:
            self._on_rebuild()

    def _add(self, index: dict, obj: Any, pattern: str | None) -> None:
        key = id(obj)
        existing = index.get(key)
        if existing is None:
            index[key] = (obj, pattern)
            return
        current = existing[1]
        if pattern is None or current is None:
            return
        candidates = current if isinstance(current, list) else [_Candidate(current)]
        if all(c.pattern != pattern for c in candidates):
            candidates.append(_Candidate(pattern))
        index[key] = (obj, candidates)

    def _add_endpoint(self, index: dict, endpoint: Any, pattern: str | None) -> None:
        # Starlette before 1.0 left no scope["route"], only scope["endpoint"]: index those too.
        if endpoint is not None:
            self._add(index, endpoint, pattern)

    def _walk(self, routes: Iterable[Any], prefix: str, index: dict, depth: int) -> None:
        if depth > 32:
            return
        for route in list(routes):
            try:
                self._walk_route(route, prefix, index, depth)
            except Exception:  # one odd route must not cost the whole index
                continue

    def _walk_route(self, route: Any, prefix: str, index: dict, depth: int) -> None:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            # FastAPI >= 0.16x includes routers by reference: each context carries the
            # route with the router prefixes applied; scope["route"] is the original route.
            for context in contexts():
                effective = getattr(context, "starlette_route", None) or context
                original = getattr(context, "original_route", None)
                if is_mount(effective):
                    self._walk_mount(effective, prefix, index, depth, also=original)
                    continue
                path = getattr(effective, "path", None)
                if path is None:
                    path = getattr(context, "path", None)
                if isinstance(path, str):
                    pattern = _join(prefix, path)
                    self._add(index, context, pattern)
                    if effective is not context:
                        self._add(index, effective, pattern)
                    if original is not None:
                        self._add(index, original, pattern)
                    self._add_endpoint(index, getattr(original, "endpoint", None), pattern)
            return
        if is_mount(route):
            self._walk_mount(route, prefix, index, depth)
            return
        sub_routes = getattr(route, "routes", None)
        if _is_host(route) and isinstance(sub_routes, list):
            # Host: same path prefix, routes of the app behind it.
            self._add(index, route, None)
            self._add_endpoint(index, getattr(route, "app", None), None)
            self._walk(sub_routes, prefix, index, depth + 1)
            return
        path = getattr(route, "path", None)
        if isinstance(path, str):
            pattern = _join(prefix, path)
            self._add(index, route, pattern)
            self._add_endpoint(index, getattr(route, "endpoint", None), pattern)

    def _walk_mount(self, mount: Any, prefix: str, index: dict, depth: int, also: Any = None) -> None:
        mount_prefix = prefix + (getattr(mount, "path", "") or "")
        sub_routes = _find_routes(getattr(mount, "app", None))
        if sub_routes is None:
            sub_routes = getattr(mount, "routes", None)
        if isinstance(sub_routes, list) and sub_routes:
            # A router below: the mount itself in scope["route"] means nothing inside matched.
            self._add(index, mount, None)
            self._add_endpoint(index, getattr(mount, "app", None), None)
            if also is not None:
                self._add(index, also, None)
            self._walk(sub_routes, mount_prefix, index, depth + 1)
        else:
            # An opaque app (StaticFiles, another framework): the mount is the route.
            pattern = mount_prefix + "/{path}"
            self._add(index, mount, pattern)
            self._add_endpoint(index, getattr(mount, "app", None), pattern)
            if also is not None:
                self._add(index, also, pattern)

    # ---------------------------------------------------------------- resolve
    def resolve(self, scope: dict, root: str | None = None) -> str:
        """The full route pattern of a finished request, or :data:`UNMATCHED`.

        ``root`` is the ``root_path`` the application was called with.
        """
        route = scope.get("route")
        if route is None:
            route = scope.get("endpoint")
            if route is None:
                return UNMATCHED
        entry = self._index.get(id(route))
        if entry is None or entry[0] is not route:
            entry = self._reindex(route)
            if entry is None:
                return _unindexed(route, scope, root or "")
        pattern = entry[1]
        if pattern.__class__ is str:
            return pattern
        if pattern is None:
            return UNMATCHED
        return self._disambiguate(route, pattern, scope, root)

    def _reindex(self, route: Any) -> tuple[Any, Any] | None:
        if time.monotonic() - self._built_at >= _REBUILD_EVERY:
            self.rebuild()
            entry = self._index.get(id(route))
            if entry is not None and entry[0] is route:
                return entry
        return None

    def _disambiguate(self, route: Any, candidates: list[_Candidate], scope: dict, root: str | None) -> str:
        # FastAPI leaves the effective (prefixed) route context of an included router.
        fastapi_scope = scope.get("fastapi")
        if isinstance(fastapi_scope, dict):
            context = fastapi_scope.get("effective_route_context")
            if context is not None:
                entry = self._index.get(id(context))
                if entry is not None and entry[0] is context and entry[1].__class__ is str:
                    return entry[1]
        # the path below the app the middleware wraps (candidates are relative to it)
        path = scope.get("path", "")
        app_root = root if root is not None else scope.get("app_root_path", "")
        if app_root and path.startswith(app_root):
            path = path[len(app_root) :]
        key = (id(route), path)
        found = self._ambiguous.get(key)
        if found is not None:
            return found
        found = candidates[0].pattern
        for candidate in candidates:
            if candidate.matches(path):
                found = candidate.pattern
                break
        if len(self._ambiguous) >= _AMBIGUOUS_CACHE_LIMIT:
            self._ambiguous.clear()
        self._ambiguous[key] = found
        return found


def _unindexed(route: Any, scope: dict, root: str) -> str:
    """The pattern of a route the index does not hold (added since the last walk, or
    behind an app whose routes cannot be walked): its path, after the router prefixes
    FastAPI records and the Mount prefixes Starlette added to ``root_path``."""
    mount = is_mount(route)
    if mount and getattr(route, "routes", None):
        return UNMATCHED  # a Mount whose router matched nothing inside
    path = None
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        path = getattr(fastapi_scope.get("effective_route_context"), "path", None)
    if not isinstance(path, str) or not path:
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not path:
            return UNMATCHED
    # The Mounts above added their matched (concrete) prefixes to root_path: usable
    # only when none of them had path parameters, i.e. all path parameters are the route's.
    current = scope.get("root_path") or ""
    mounts = current[len(root) :] if current.startswith(root) else ""
    if mount:  # an opaque app: root_path ends with its own prefix, concrete if it has parameters
        mounts = mounts[: len(mounts) - len(path)] if mounts.endswith(path) else ""
    if set(scope.get("path_params") or ()) - set(_PARAMETER.findall(path)):
        mounts = ""
    return mounts + path + "/{path}" if mount else mounts + path


def is_mount(route: Any) -> bool:
    from starlette.routing import Mount

    return isinstance(route, Mount)


def _is_host(route: Any) -> bool:
    from starlette.routing import Host

    return isinstance(route, Host)
