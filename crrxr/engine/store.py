"""Cube store housekeeping: RSS identity, ledger, orphan ``*.partial`` files, attrs, consolidation."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from crrxr.engine.integrity import rss_content_digest
from crrxr.io import cube as C

#: Channels (as fractions of the axis) whose fiber positions enter the RSS identity.
_IDENTITY_FRACTIONS = (0.0, 0.5, 1.0)


def rss_identity(rss: xr.Dataset, path: str | None = None) -> dict[str, object]:
    """Content identity of an RSS (not its path): shapes, wavelength, exposures, fibers, positions.

    Hashes the bytes of the wavelength, exposure, spectrum, fiber and exposure_index coords, the
    seeing, ``xpos``/``ypos`` at the first, middle and last channels, and all of flux, ivar and mask
    (streamed chunk by chunk: :func:`crrxr.engine.integrity.rss_content_digest`). Returns a JSON-able dict
    with ``sha256`` and the shapes (for messages).
    """
    h = hashlib.sha256()
    n_spec, n_wave = int(rss.sizes["spectrum"]), int(rss.sizes["wavelength"])

    def add(name: str, arr) -> None:
        a = np.ascontiguousarray(np.asarray(arr))
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())

    for name in ("wavelength", "exposure", "spectrum", "fiber", "exposure_index", "seeing_fwhm"):
        add(name, rss[name].values)
    channels = sorted({min(n_wave - 1, int(round(f * (n_wave - 1)))) for f in _IDENTITY_FRACTIONS})
    for name in ("xpos", "ypos"):
        add(name, rss[name].isel(wavelength=channels).values)
    h.update(f"content:{rss_content_digest(rss, path)}".encode())
    return {
        "sha256": h.hexdigest(),
        "n_spectrum": n_spec,
        "n_wavelength": n_wave,
        "n_exposure": int(rss.sizes["exposure"]),
        "wavelength_range": [float(rss["wavelength"][0]), float(rss["wavelength"][-1])],
    }


def store_exists(store: str | os.PathLike) -> bool:
    """True when ``store`` holds a zarr group (its root ``zarr.json``)."""
    return (Path(store) / "zarr.json").is_file()


def is_crrxr_cube(store: str | os.PathLike) -> bool:
    """True when ``store`` is a cube store written by ``crrxr build`` (its root attrs say so)."""
    try:
        meta = json.loads((Path(store) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes") or {}
    return (
        meta.get("node_type") == "group"
        and C.ATTR_RSS_IDENTITY in attrs
        and C.ATTR_VERSION in attrs
    )


def output_state(store: str | os.PathLike) -> str:
    """What sits at an output path: ``absent`` (nothing, or an empty folder), ``cube`` (a crrxr
    cube store), ``file`` (a regular file or a symlink) or ``foreign`` (anything else: never
    replaced by crrxr)."""
    p = Path(store)
    if p.is_symlink() or p.is_file():
        return "file"
    if not p.exists():
        return "absent"
    if p.is_dir() and not any(p.iterdir()):
        return "absent"
    return "cube" if is_crrxr_cube(p) else "foreign"


def remove_own_temporaries(store: str | os.PathLike) -> list[str]:
    """Remove temporaries a killed crrxr left next to ``store`` (``.<name>.tmp-*`` templates and
    ``.<name>.old-*`` replaced stores, named by :mod:`crrxr.io.atomic`); call only holding the lease."""
    from crrxr.io.atomic import remove_path

    p = Path(os.path.abspath(store))
    removed = []
    for pattern in (f".{p.name}.tmp-*", f".{p.name}.old-*"):
        for leftover in p.parent.glob(pattern):
            remove_path(leftover)
            removed.append(str(leftover))
    return removed


def remove_partials(store: str | os.PathLike) -> list[str]:
    """Delete orphan ``*.partial`` files left by killed writers (call only while holding the lock)."""
    removed = []
    for path in Path(store).rglob("*.partial"):
        if path.is_file():
            path.unlink()
            removed.append(str(path.relative_to(store)))
    return removed


def read_attrs(store: str | os.PathLike) -> dict:
    return dict(zarr.open_group(str(store), mode="r").attrs)


def update_attrs(store: str | os.PathLike, attrs: dict) -> None:
    zarr.open_group(str(store), mode="r+").attrs.update(attrs)


def read_ledger(store: str | os.PathLike) -> np.ndarray:
    """The ``chunk_done`` ledger as a (n_chunks,) u1 array."""
    return np.asarray(zarr.open_array(str(store), path=C.CHUNK_DONE, mode="r")[:], dtype=np.uint8)


def chunk_arrays_present(store: str | os.PathLike) -> None:
    """Open every array a chunk task writes (raises KeyError / zarr errors if one is missing)."""
    from crrxr.engine.integrity import CHECKSUM

    group = zarr.open_group(str(store), mode="r")
    for name in (*C.CHUNK_VARIABLES, *C.BAND_VARIABLES, C.CHUNK_DONE, CHECKSUM, C.BAND_INDEX):
        group[name]


def read_failed_channels(store: str | os.PathLike) -> list[int]:
    arr = zarr.open_array(str(store), path=C.CHANNEL_FAILED, mode="r")[:]
    return [int(i) for i in np.flatnonzero(arr)]


def read_reuse_summary(store: str | os.PathLike) -> tuple[int, int, float]:
    """(interpolated channels, channels, largest reuse_bound in noise sigma) of a cube store."""
    exact = zarr.open_array(str(store), path=C.CHANNEL_EXACT, mode="r")[:]
    bound = zarr.open_array(str(store), path=C.REUSE_BOUND, mode="r")[:]
    return int(np.count_nonzero(exact == 0)), int(exact.size), float(np.max(bound, initial=0.0))


@contextlib.contextmanager
def lock_file_tolerated():
    """Silence zarr's warning about the build lock file while it sits in the store."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at \S*\.crrxr-build\.lock is not")
        yield


def consolidate(store: str | os.PathLike) -> None:
    """Consolidate the metadata so a plain ``xr.open_zarr(store)`` reads it without warnings."""
    with lock_file_tolerated(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(store))


def drop_consolidated(store: str | os.PathLike) -> None:
    """Remove consolidated metadata (it goes stale while attrs change during a resumed build)."""
    root = Path(store) / "zarr.json"
    meta = json.loads(root.read_text())
    if meta.pop("consolidated_metadata", None) is not None:
        tmp = root.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, root)
