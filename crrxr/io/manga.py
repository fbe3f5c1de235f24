"""MaNGA FITS in/out: LOGRSS -> crrxr RSS Zarr (:func:`ingest_manga_rss`) and cube Zarr -> LOGCUBE.

The work is split by direction into :mod:`crrxr.io.manga_rss` (ingest), :mod:`crrxr.io.manga_cube`
(export) and :mod:`crrxr.io.manga_masks` (MANGA_DRP2PIXMASK bit mapping); this module is the public
entry point.
"""

from __future__ import annotations

from crrxr.io.manga_cube import CubeFormatError, export_logcube
from crrxr.io.manga_masks import (
    DRP2_TO_RSS,
    DRP2PIXMASK_BITS,
    UnknownMaskBitsError,
    map_drp2pixmask,
)
from crrxr.io.manga_rss import MangaFormatError, ingest_manga_rss

__all__ = [
    "CubeFormatError",
    "export_logcube",
    "DRP2PIXMASK_BITS",
    "DRP2_TO_RSS",
    "MangaFormatError",
    "UnknownMaskBitsError",
    "ingest_manga_rss",
    "map_drp2pixmask",
]
