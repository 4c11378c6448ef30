"""Import path of the original package's ``malti_telemetry.utils``, for code that used it."""

from ._consumer import anonymize_ip, extract_ip_from_forwarded_for, is_valid_ip
from ._telemetry import configure_malti, get_malti_stats, get_telemetry_system, logger

__all__ = ["anonymize_ip", "configure_malti", "extract_ip_from_forwarded_for", "get_malti_stats", "is_valid_ip"]
