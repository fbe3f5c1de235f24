"""The manifest of a survey folder: one line per IFU, ``index<TAB>rss<TAB>store`` (absolute paths).

The line number is the job array index; lines are only ever appended, so an index keeps meaning
the same IFU across reruns of ``crrxr submit``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.tsv"


@dataclass(frozen=True)
class Entry:
    index: int
    rss: str
    store: str


def store_name(rss: str) -> str:
    """The cube store name of an RSS: its file name without ``.zarr``, plus ``.cube.zarr``."""
    name = Path(rss.rstrip("/")).name
    stem = name[: -len(".zarr")] if name.endswith(".zarr") else name
    return f"{stem}.cube.zarr"


def read_manifest(folder: str | os.PathLike) -> list[Entry]:
    path = Path(folder) / MANIFEST
    entries = []
    for n, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            index, rss, store = line.split("\t")
            entries.append(Entry(int(index), rss, store))
        except ValueError:
            raise ValueError(f"{path} line {n + 1} is not 'index<TAB>rss<TAB>store'") from None
    return entries


def plan_manifest(
    folder: str | os.PathLike, rss_paths: list[str]
) -> tuple[list[Entry], list[Entry]]:
    """(every entry, the new ones) after adding ``rss_paths`` to the manifest of ``folder``
    (existing entries keep their index; an RSS already listed is not added twice). Writes nothing."""
    folder = Path(os.path.abspath(folder))
    old = read_manifest(folder) if (folder / MANIFEST).is_file() else []
    by_rss = {e.rss: e for e in old}
    names = {Path(e.store).name: e.rss for e in old}
    new: list[Entry] = []
    for raw in rss_paths:
        rss = os.path.abspath(raw)
        if any(c in rss for c in "\t\n"):
            raise ValueError(f"RSS path {raw!r} contains a tab or newline; rename it")
        if rss in by_rss:
            continue
        if not os.path.exists(rss):
            raise FileNotFoundError(f"RSS store {raw} does not exist")
        name = store_name(rss)
        if name in names and names[name] != rss:
            raise ValueError(
                f"{raw} and {names[name]} would both write {folder / name}; give the RSS stores "
                "distinct file names (or submit them to different --out folders)"
            )
        entry = Entry(len(old) + len(new), rss, str(folder / name))
        names[name] = rss
        by_rss[rss] = entry
        new.append(entry)
    return old + new, new


def append_manifest(folder: str | os.PathLike, entries: list[Entry]) -> None:
    """Append ``entries`` to the manifest (created if missing)."""
    with open(Path(folder) / MANIFEST, "a") as fh:
        for e in entries:
            fh.write(f"{e.index}\t{e.rss}\t{e.store}\n")
