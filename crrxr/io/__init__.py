"""crrxr.io: the RSS data model (names, validation, opening stores) and the cube template."""

from .cube import cube_template
from .cube_reader import CubeView, open_cube
from .rss import open_rss
from .schema import RSSReport, SchemaError, check_rss, inspect_rss, validate_rss

__all__ = [
    "CubeView",
    "open_cube",
    "RSSReport",
    "SchemaError",
    "check_rss",
    "cube_template",
    "inspect_rss",
    "open_rss",
    "validate_rss",
]
