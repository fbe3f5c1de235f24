"""Data integrity of cube stores and RSS inputs: per-chunk checksums recorded with the ledger mark,
re-checked on resume and by ``crrxr verify``; input chunks that cannot be read are errors, never NaN.

A chunk's checksum is the SHA-256 of what the store holds for it *after* the write (flux, ivar,
mask, channel_failed over its channels, and psf/correlation of the bands inside it), read back
through zarr: the same function computes it when the chunk is marked done and when it is verified,
so a deleted, truncated or altered chunk file (or a write that did not land) never passes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import xarray as xr
import zarr

from crrxr.io import cube as C

#: Cube array of per-chunk checksums: (wavelength_chunk, 32) u1, SHA-256 bytes, 0 = none recorded.
CHECKSUM = "chunk_checksum"
DIGEST_BYTES = 32


class InputChunkError(OSError):
    """An RSS chunk a task needs is missing or cannot be decoded (the message names it)."""


def add_checksum_array(store: str, n_chunks: int) -> None:
    """Create the all-zero ``chunk_checksum`` array in a cube template (before any chunk runs)."""
    group = zarr.open_group(store, mode="r+")
    group.create_array(
        CHECKSUM,
        shape=(n_chunks, DIGEST_BYTES),
        chunks=(1, DIGEST_BYTES),
        dtype="u1",
        fill_value=0,
        dimension_names=(C.WAVELENGTH_CHUNK, "digest"),
        attributes={
            "long_name": "SHA-256 of each wavelength chunk's stored data, recorded with its "
            "chunk_done mark (all zero: none recorded)"
        },
    )


def _chunk_pieces(group: zarr.Group, start: int, stop: int, bands: Sequence[int]) -> list:
    region = slice(start, stop)
    names = list(C.CHUNK_VARIABLES) + [v for v in C.LSF_VARIABLES if v in group]
    pieces = [group[name][region] for name in names]
    for b in bands:
        pieces.append(group[C.PSF][b])
        pieces.append(group[C.CORRELATION][b])
    return pieces


def chunk_digest(group: zarr.Group, start: int, stop: int, bands: Sequence[int]) -> bytes:
    """SHA-256 of the stored data of channels ``start:stop`` and band positions ``bands``."""
    h = hashlib.sha256()
    for a in _chunk_pieces(group, start, stop, bands):
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def mark_chunk_done(
    group: zarr.Group, index: int, start: int, stop: int, bands: Sequence[int]
) -> None:
    """Record chunk ``index``'s checksum, then its ledger mark (the mark is always last)."""
    digest = np.frombuffer(chunk_digest(group, start, stop, bands), dtype=np.uint8)
    group[CHECKSUM][index] = digest
    group[C.CHUNK_DONE][index] = 1


def chunk_layout(store: str) -> list[tuple[int, int, list[int]]]:
    """``(start, stop, band positions)`` of every chunk of a cube store, from its own arrays."""
    group = zarr.open_group(store, mode="r")
    n_wave = int(group[C.FLUX].shape[0])
    wc = int(group[C.FLUX].chunks[0])
    band_index = [int(i) for i in group[C.BAND_INDEX][:]]
    out = []
    for start in range(0, n_wave, wc):
        stop = min(n_wave, start + wc)
        out.append((start, stop, [b for b, ch in enumerate(band_index) if start <= ch < stop]))
    return out


def bad_chunks(store: str, only: Sequence[int] | None = None) -> dict[int, str]:
    """Chunks marked done whose stored data do not match their checksum: ``{index: reason}``.

    ``only``: check these chunk indices (default: every chunk marked done).
    """
    group = zarr.open_group(store, mode="r")
    ledger = np.asarray(group[C.CHUNK_DONE][:])
    if CHECKSUM not in group:
        return {
            int(k): "no checksum recorded (store written by an older crrxr)"
            for k in np.flatnonzero(ledger)
        }
    sums = np.asarray(group[CHECKSUM][:])
    layout = chunk_layout(store)
    todo = [int(k) for k in (np.flatnonzero(ledger) if only is None else only) if ledger[k]]
    bad: dict[int, str] = {}
    for k in todo:
        start, stop, bands = layout[k]
        try:
            got = chunk_digest(group, start, stop, bands)
        except Exception as exc:  # a truncated or corrupt chunk file: unreadable
            bad[k] = f"unreadable ({type(exc).__name__}: {exc})"
            continue
        if not sums[k].any():
            bad[k] = "no checksum recorded"
        elif got != sums[k].tobytes():
            bad[k] = "data differ from the checksum recorded when it was written"
    return bad


def unmark_chunks(store: str, chunks: Sequence[int]) -> None:
    """Clear the ledger marks of ``chunks`` (so a resume recomputes them)."""
    group = zarr.open_group(store, mode="r+")
    for k in chunks:
        group[C.CHUNK_DONE][int(k)] = 0


def _missing_chunks(array: zarr.Array, start: int, stop: int) -> list[int]:
    """Wavelength chunk numbers of ``array`` overlapping ``start:stop`` with no stored chunk."""
    wc = int(array.chunks[-1])
    n_other = [-(-s // c) for s, c in zip(array.shape[:-1], array.chunks[:-1], strict=True)]
    missing = []
    for w in range(start // wc, -(-stop // wc)):
        for idx in np.ndindex(*n_other):
            key = array.metadata.encode_chunk_key((*idx, w))
            if not _exists(array, key):
                missing.append(w)
                break
    return missing


def _exists(array: zarr.Array, key: str) -> bool:
    from zarr.core.sync import sync

    path = f"{array.path}/{key}" if array.path else key
    return bool(sync(array.store.exists(path)))


def check_input_slice(path: str, names: Sequence[str], start: int, stop: int) -> None:
    """Raise :class:`InputChunkError` if a NaN-filled float variable of the RSS at ``path`` lacks a
    stored chunk over channels ``start:stop`` (zarr would silently read it as NaN)."""
    group = zarr.open_group(path, mode="r")
    for name in names:
        if name not in group:
            continue  # computed in the task (e.g. by sky subtraction), not read
        arr = group[name]
        if arr.ndim < 2 or arr.dtype.kind != "f" or not np.isnan(arr.fill_value):
            continue  # integer arrays legitimately omit all-fill (all-zero) chunks
        missing = _missing_chunks(arr, start, stop)
        if missing:
            raise InputChunkError(
                f"RSS {path}: variable {name!r} has no stored chunk for wavelength chunk(s) "
                f"{missing} (channels {start}:{stop}); the input store is incomplete or damaged: "
                "rewrite it (crrxr ingest-manga / crrxr simulate), then rerun with --resume"
            )


def require_input_store(path: str) -> None:
    """Raise :class:`InputChunkError` if the RSS store at ``path`` is gone (moved, renamed, deleted)
    or cannot be read (permissions), e.g. because it was moved away while a build was running."""
    root = os.path.join(path, "zarr.json")
    if os.path.isfile(root) and os.access(path, os.R_OK | os.X_OK) and os.access(root, os.R_OK):
        return
    why = "is gone (moved, renamed or deleted)" if not os.path.exists(path) else "is unreadable"
    raise InputChunkError(
        f"input RSS store {path} {why} during the build; put it back (same path, same data)"
    )


def load_slice(part: xr.Dataset, path: str, start: int, stop: int) -> xr.Dataset:
    """``part.load()`` with decode errors turned into :class:`InputChunkError` naming the input.

    The store and its chunks are checked before and again after the read: zarr reads a chunk
    that vanished meanwhile (the store moved away mid-read) as its NaN fill value, silently."""
    names = [n for n in part.data_vars]
    require_input_store(path)
    check_input_slice(path, names, start, stop)
    try:
        # read in this thread: inside a distributed worker a plain load() would send the
        # reads to the cluster as extra tasks
        loaded = part.load(scheduler="synchronous")
    except (OSError, ValueError, RuntimeError) as exc:
        require_input_store(path)
        raise InputChunkError(
            f"RSS {path}: cannot read channels {start}:{stop} ({type(exc).__name__}: {exc}); the "
            "input store is damaged: rewrite it, then rerun with --resume"
        ) from exc
    _recheck(path, names, start, stop)
    return loaded


def _recheck(path: str, names: Sequence[str], start: int, stop: int) -> None:
    """:func:`check_input_slice` after a read; any failure to look is the store going away."""
    require_input_store(path)
    try:
        check_input_slice(path, names, start, stop)
    except InputChunkError:
        raise
    except Exception:  # noqa: BLE001 - the store changed under us: say so if it is gone
        require_input_store(path)
        raise


def rss_content_digest(rss: xr.Dataset, path: str | None = None) -> str:
    """SHA-256 over flux, ivar and mask of an RSS, streamed one stored wavelength chunk at a time
    (with the RSS's Zarr ``path``, a missing or undecodable chunk raises :class:`InputChunkError`)."""
    h = hashlib.sha256()
    n_wave = int(rss.sizes["wavelength"])
    chunks = rss["flux"].chunks
    step = int(chunks[-1][0]) if chunks else n_wave
    for name in ("flux", "ivar", "mask"):
        var = rss[name].transpose(..., "wavelength")
        h.update(f"{name}:{var.dtype.str}:{var.shape}".encode())
        for start in range(0, n_wave, step):
            block = var.isel(wavelength=slice(start, start + step))
            if path is not None:
                check_input_slice(path, [name], start, min(n_wave, start + step))
                try:
                    a = np.ascontiguousarray(block.values)
                except (OSError, ValueError, RuntimeError) as exc:
                    raise InputChunkError(
                        f"RSS {path}: cannot read {name!r} channels {start}:{start + step} "
                        f"({type(exc).__name__}: {exc}); the input store is damaged: rewrite it"
                    ) from exc
            else:
                a = np.ascontiguousarray(block.values)
            h.update(a.tobytes())
    return h.hexdigest()
