"""Open an RSS Zarr store lazily (or check an in-memory Dataset) and validate it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import xarray as xr

from .schema import SchemaError, check_rss

__all__ = ["has_consolidated_metadata", "open_rss", "open_zarr_unchecked"]


def has_consolidated_metadata(path: str | os.PathLike[str]) -> bool | None:
    """Whether a local Zarr store carries consolidated metadata (v2 ``.zmetadata`` or v3 ``zarr.json``).

    None for non-local paths (URLs), where xarray's own fallback is used.
    """
    if "://" in str(path):
        return None
    root = Path(path)
    if (root / ".zmetadata").is_file():
        return True
    meta = root / "zarr.json"
    if meta.is_file():
        try:
            return json.loads(meta.read_text()).get("consolidated_metadata") is not None
        except (OSError, ValueError):
            return False
    return False


def open_zarr_unchecked(
    path: str | os.PathLike[str], *, chunks: dict | str | None = None
) -> xr.Dataset:
    """``xr.open_zarr`` with crrxr's settings and clear errors, without schema validation."""
    if "://" not in str(path) and not Path(path).exists():
        raise FileNotFoundError(
            f"{path}: no such RSS store; create one with `crrxr simulate` or `crrxr ingest-manga`"
        )
    try:
        return xr.open_zarr(
            path,
            consolidated=has_consolidated_metadata(path),
            chunks={} if chunks is None else chunks,
            # CF decoding would turn the u4 mask into floats if a _FillValue were set; flux/ivar/
            # positions carry no scale/offset, so nothing is lost by not decoding.
            mask_and_scale=False,
            decode_times=False,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SchemaError(
            f"{path}: cannot open as a Zarr RSS store ({type(exc).__name__}: {exc}); "
            "is it a complete Zarr store written by crrxr?"
        ) from exc


def open_rss(
    path_or_dataset: str | os.PathLike[str] | xr.Dataset,
    *,
    bad_bits: int | None = None,
    chunks: dict | str | None = None,
    check_data: bool = True,
) -> xr.Dataset:
    """The RSS Dataset of a Zarr store (lazy, dask-backed, on the store's own chunks) or ``ds`` itself.

    Validates against the schema (DESIGN.md section 2; see :mod:`crrxr.io.schema` for what is read)
    and raises :class:`SchemaError` listing every problem, ``FileNotFoundError`` for a missing path.
    ``chunks`` is passed to ``xr.open_zarr`` (default ``{}``: the stored chunks). ``check_data=False``
    skips the pass over ivar/mask/positions (metadata and small coordinates only).
    """
    if isinstance(path_or_dataset, xr.Dataset):
        check_rss(path_or_dataset, bad_bits=bad_bits, check_data=check_data)
        return path_or_dataset
    path = path_or_dataset
    ds = open_zarr_unchecked(path, chunks=chunks)
    check_rss(ds, bad_bits=bad_bits, source=str(path), check_data=check_data)
    return ds
