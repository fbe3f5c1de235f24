"""The state of cube builds, read from the stores themselves (no database).

Per store: ``not started`` (nothing there), ``running`` (a live lease: host, pid, SLURM job),
``partial`` (k of n chunks in the ledger, nobody building), ``unfinished`` (every chunk done but the
build's finish step, which records failed channels and consolidates the metadata, has not run:
``--resume`` completes it), ``complete``, or ``not a cube`` (something crrxr did not write).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crrxr.engine import store as S
from crrxr.engine.lock import holder_alive, read_lease

STATES = ("complete", "unfinished", "running", "partial", "not started", "not a cube")


@dataclass
class StoreStatus:
    """What :func:`store_status` found for one cube store."""

    store: str
    state: str
    chunks_done: int = 0
    chunks_total: int = 0
    failed_channels: list[int] = field(default_factory=list)
    where: str = ""  # the live build's host/pid/SLURM job (running only)

    def line(self) -> str:
        chunks = f"{self.chunks_done}/{self.chunks_total}" if self.chunks_total else "-"
        failed = str(len(self.failed_channels)) if self.chunks_total else "-"
        return f"{self.state:<12} {chunks:>9} {failed:>7}  {self.store}" + (
            f"  ({self.where})" if self.where else ""
        )


def _finished(store: str) -> bool:
    """Whether the build's finish step ran last: consolidated metadata is written there (and
    dropped again when a resume starts)."""
    try:
        meta = json.loads((Path(store) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("consolidated_metadata"))


def _where(lease: dict) -> str:
    parts = [f"pid {lease.get('pid')} on {lease.get('host')}"]
    if lease.get("slurm_job_id"):
        parts.append(f"SLURM job {lease['slurm_job_id']}")
    return ", ".join(parts)


def store_status(store: str | os.PathLike) -> StoreStatus:
    """The state of the cube store at ``store`` (see the module doc); reads only."""
    store = os.fspath(store)
    lease = read_lease(store)
    live = bool(lease) and holder_alive(lease)
    state = S.output_state(store)
    if state == "absent":
        return StoreStatus(
            store, "running" if live else "not started", where=_where(lease) if live else ""
        )
    if state != "cube":
        return StoreStatus(store, "not a cube")
    ledger = S.read_ledger(store)
    done, total = int(np.count_nonzero(ledger)), int(ledger.size)
    failed = S.read_failed_channels(store)
    if live:
        return StoreStatus(store, "running", done, total, failed, _where(lease))
    if done < total:
        return StoreStatus(store, "partial", done, total, failed)
    return StoreStatus(store, "complete" if _finished(store) else "unfinished", done, total, failed)


def find_stores(paths: list[str]) -> list[str]:
    """Cube stores named by ``paths``: a survey folder of ``crrxr submit`` (its manifest's stores,
    started or not), a cube store, or a folder holding cube stores."""
    from crrxr.batch.manifest import MANIFEST, read_manifest

    out: list[str] = []
    for path in paths:
        p = Path(path)
        if (p / MANIFEST).is_file():
            out += [e.store for e in read_manifest(p)]
        elif S.output_state(p) == "cube" or (p / "zarr.json").is_file():
            out.append(str(p))
        elif p.is_dir():
            found = sorted(str(c) for c in p.iterdir() if c.is_dir() and S.is_crrxr_cube(c))
            if not found:
                raise FileNotFoundError(
                    f"{path} holds no cube stores and no {MANIFEST} (a crrxr submit folder)"
                )
            out += found
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return out


def summary(statuses: list[StoreStatus]) -> str:
    """The status table with totals (what ``crrxr status`` prints)."""
    head = f"{'state':<12} {'chunks':>9} {'failed':>7}  store"
    lines = [head] + [s.line() for s in statuses]
    counts = {k: sum(1 for s in statuses if s.state == k) for k in STATES}
    chunks_done = sum(s.chunks_done for s in statuses)
    chunks_total = sum(s.chunks_total for s in statuses)
    lines.append(
        f"total: {len(statuses)} IFU(s): "
        + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        + f"; {chunks_done}/{chunks_total} chunks in started stores, "
        f"{sum(len(s.failed_channels) for s in statuses)} failed channel(s)"
    )
    return "\n".join(lines)
