"""crrxr.io: the RSS data model (names, validation, opening stores)."""

from .rss import open_rss
from .schema import RSSReport, SchemaError, check_rss, inspect_rss, validate_rss

__all__ = ["RSSReport", "SchemaError", "check_rss", "inspect_rss", "open_rss", "validate_rss"]
