"""Write-to-temporary-then-rename, for files and for directories (Zarr stores).

Readers must never see a half-written output, and a failed write must leave nothing behind. Both
are provided by writing to a temporary path in the *same directory* as the final path (so the final
``os.replace`` is a rename within one filesystem, atomic for files) and renaming on success::

    with atomic_output("cube-LOGCUBE.fits") as tmp:
        write_groups(tmp)            # any exception here removes ``tmp``
    # here "cube-LOGCUBE.fits" exists and is complete

The temporary name is ``.<final name>.tmp-<random>`` (hidden, and recognisably crrxr's). A process
killed with SIGKILL cannot clean up; such leftovers match :data:`TEMP_GLOB` and are safe to delete
when no writer runs.

Directories: POSIX cannot atomically replace a non-empty directory. Without ``overwrite`` the final
path must not exist, and the rename is atomic. With ``overwrite=True`` an existing directory is first
renamed aside (``.<name>.old-<random>``), the new one renamed in, then the old one deleted; a crash
between the two renames leaves the old data under the ``.old`` name, never a mixture.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TEMP_GLOB", "atomic_output", "remove_path", "temporary_sibling"]

log = logging.getLogger(__name__)

TEMP_GLOB = ".*.tmp-*"


def temporary_sibling(final: str | os.PathLike[str], tag: str = "tmp") -> Path:
    """A fresh, non-existing path next to ``final`` (same directory, hidden name)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{tag}-{uuid.uuid4().hex[:12]}")


def remove_path(path: str | os.PathLike[str]) -> None:
    """Remove a file, a symlink or a directory tree; a missing path is not an error."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` if the block succeeds.

    The block creates the file or directory at the yielded path itself (nothing exists there on
    entry). On any exception (including KeyboardInterrupt) the temporary path is removed and the
    exception propagates; ``final`` is untouched. If the block creates nothing, nothing is renamed.

    Raises ``FileExistsError`` up front if ``final`` exists and ``overwrite`` is false, and
    ``FileNotFoundError`` if the parent directory does not exist.
    """
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(
            f"{final}: output directory {parent} does not exist; create it first"
        )
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise FileExistsError(f"{final} already exists; remove it or pass overwrite")
    tmp = temporary_sibling(final)
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    if not (tmp.exists() or tmp.is_symlink()):
        return
    try:
        _replace(tmp, final, overwrite=overwrite)
    except BaseException:
        remove_path(tmp)
        raise


def _replace(tmp: Path, final: Path, *, overwrite: bool) -> None:
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    if not overwrite:  # appeared while we were writing
        raise FileExistsError(f"{final} appeared while writing; the new output was discarded")
    if final.is_dir() and not final.is_symlink():
        old = temporary_sibling(final, "old")
        os.replace(final, old)
        os.replace(tmp, final)
        remove_path(old)
    else:
        if tmp.is_dir():
            remove_path(final)
        os.replace(tmp, final)
    log.debug("replaced %s", final)
