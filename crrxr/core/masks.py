"""Mask bits: crrxr's RSS input bits and the MaNGA DRP3PIXMASK cube bits (values, not bit numbers)."""

from __future__ import annotations

import numpy as np

# RSS input mask (u4). MaNGA ingest maps MANGA_DRP2PIXMASK onto these.
RSS_NODATA = np.uint32(1)
RSS_DEADFIBER = np.uint32(2)
RSS_REJECT = np.uint32(4)
RSS_NOSKY = np.uint32(8)
RSS_SATURATED = np.uint32(16)
RSS_BITS: dict[str, int] = {
    "NODATA": 1,
    "DEADFIBER": 2,
    "REJECT": 4,
    "NOSKY": 8,
    "SATURATED": 16,
}
RSS_ALL_BITS = int(sum(RSS_BITS.values()))

# Cube mask (u4): MANGA_DRP3PIXMASK.
NOCOV = np.uint32(1)
LOWCOV = np.uint32(2)
DEADFIBER = np.uint32(4)
FORESTAR = np.uint32(8)
DONOTUSE = np.uint32(1024)
CUBE_BITS: dict[str, int] = {
    "NOCOV": 1,
    "LOWCOV": 2,
    "DEADFIBER": 4,
    "FORESTAR": 8,
    "DONOTUSE": 1024,
}
