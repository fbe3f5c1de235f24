"""Chunk planning over wavelength from a memory budget (rechunker-style explicit ``max_memory``).

The plan is pure arithmetic on the problem size; it is printed before any work (``crrxr estimate``
shows it without running) and absurd plans are refused here with a message naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from dask.utils import format_bytes, parse_bytes

from crrxr.executors.blas import BLAS_THREADS

#: Grids larger than this many pixels are refused (a dense kernel matrix per channel would not fit).
MAX_PIXELS = 1_000_000
#: Default memory budget per worker when neither a wave chunk nor a budget is given.
DEFAULT_BUDGET = "2GB"
#: Resident memory of a worker around its tasks (bytes): ~185 MiB for an interpreter with
#: numpy/scipy/xarray/zarr/dask imported, plus the Dask worker machinery and the heap a long-lived
#: worker keeps after many tasks (measured 240-300 MiB more on a 1000-lenslet Shepard build).
WORKER_BASELINE = 350 * 2**20
#: Fraction of a worker's budget the baseline plus one task may reach: Dask pauses a worker at 80% of
#: its memory limit and restarts it at 95%; task memory is unmanaged, so spilling cannot help.
USABLE_FRACTION = 0.7
#: Upper bound of channels per chunk chosen from a budget (larger chunks add little and delay resume).
MAX_AUTO_CHUNK = 256


class PlanError(ValueError):
    """The requested build cannot run as planned; the message names the fix."""


def parse_memory(value: str | int | float | None) -> int | None:
    """Bytes from ``2GB``, ``512MiB``, ``1.5e9`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        n = int(value)
    else:
        try:
            n = int(parse_bytes(str(value)))
        except ValueError as exc:
            raise PlanError(f"cannot read memory size {value!r}; use e.g. 2GB or 512MiB") from exc
    if n <= 0:
        raise PlanError(f"memory size must be positive, got {value!r}")
    return n


#: Bytes per sample-pixel neighbour pair of a channel's geometry (indices, distances, masks, kernel
#: values, sparse matrices; ~100 B measured on a 1000-lenslet, 0.25" grid).
NEIGHBOUR_BYTES = 100
#: Bytes per stored correlation pair at a band channel (pair lists, covariance terms; ~280 B measured).
PAIR_BYTES = 300


def channel_bytes(
    n_samples: int, n_pixels: int, method: str = "crr", n_pairs: int = 0, n_neighbours: int = 0
) -> int:
    """Working set of one channel's solve (bytes): independent of the chunk length.

    ``n_neighbours``: sample-pixel pairs within the kernel's reach (the sparse geometry); CRR adds
    the dense weights W (pixels x samples) with two same-size temporaries (3 n m float64) and the Gram
    matrix with its eigenvectors and a scratch copy (3 min(n, m)^2 float64). ``n_pairs``: stored
    correlation pairs, computed at band channels.
    """
    total = NEIGHBOUR_BYTES * n_neighbours + PAIR_BYTES * n_pairs
    if method != "shepard":
        small = min(n_samples, n_pixels)
        total += 8 * (3 * n_samples * n_pixels + 3 * small * small)
    return total


def per_channel_bytes(n_samples: int, n_pixels: int) -> int:
    """Memory that grows with the chunk length, per channel (bytes).

    RSS slice (flux, ivar, xpos, ypos, fwhm as f8, mask u4: 44 B per sample, twice for the read
    buffer and the working copy) and the outputs (flux, ivar as f8 then f4, mask u4: 28 B per pixel).
    """
    return 2 * 44 * n_samples + 28 * n_pixels


#: Working memory of a weight-reuse task beside its cache, in exact channel working sets
#: (:func:`channel_bytes`): interpolation products, a block's images and, for the code variant,
#: the quadratures of moves and sample removals. Measured (peak resident memory less the process
#: before the call and the cache's peak): code variant 230-380 MiB on 128- and 256-channel chunks
#: of a 127 x 9 MaNGA cube (DAR 2", the blue: moves; channel working set 166 MB: up to 2.4 of
#: them); paper variant 245 MiB on 128 channels of 2400 lenslets (449 MB: 0.55) before its solves
#: were moved across selections (not measured since: the factor's 3.0 is taken for it too).
REUSE_WORKING = {True: 3.0, False: 1.0}  # by whether solves keep their factor (moves, removals)
#: Fewest solves (weights with their eigendecomposition, :func:`solve_bytes`) a reuse cache must
#: hold: a check holds up to four nodes and their moved weights at once. Below this a block solves
#: its nodes again and again (MaNGA, DAR 2": +44 % solves with 6 of them, +11 % with 8).
REUSE_MIN_SOLVES = 8
#: Largest reuse cache chosen from a budget (the most a 127 x 9 MaNGA block held was ~580 MB).
REUSE_MAX_CACHE = 2**30


def keeps_factor(variant: str, n_samples: int, n_selected: int) -> bool:
    """Whether weight reuse keeps its solves' eigendecompositions: the code variant for moves and
    removals, the paper variant for moves where its solves take the pixel-side route, i.e. where
    a channel's ``n_samples`` outnumber its ``n_selected`` solved pixels (a lenslet array, not a
    fiber bundle)."""
    return variant == "code" or n_samples > n_selected


def solve_bytes(n_samples: int, n_pixels: int, factor: bool = True) -> int:
    """One exact CRR solve kept by weight reuse: W (pixels x samples) and, with ``factor`` (the code
    variant keeps it for moves and removals, the paper variant for moves on the pixel-side route),
    the eigenvectors of the smaller Gram matrix (bytes, float64)."""
    small = min(n_samples, n_pixels) if factor else 0
    return 8 * (n_samples * n_pixels + small * small)


def task_bytes(
    n_samples: int,
    n_pixels: int,
    wave_chunk: int,
    method: str = "crr",
    n_pairs: int = 0,
    n_neighbours: int = 0,
    reuse_cache: int | None = None,
    reuse_factor: bool = True,
) -> int:
    """Estimated peak memory of one task solving ``wave_chunk`` channels (bytes); with weight
    reuse (``reuse_cache``: its cache's bytes; ``reuse_factor``: the code variant, whose solves
    keep their eigendecomposition) the working memory around the cache too."""
    one = channel_bytes(n_samples, n_pixels, method, n_pairs, n_neighbours)
    if reuse_cache is not None:
        one = int(REUSE_WORKING[reuse_factor] * one) + reuse_cache
    return one + wave_chunk * per_channel_bytes(n_samples, n_pixels)


def usable_bytes(budget: int) -> int:
    """Memory a task may use in a worker whose limit is ``budget`` bytes."""
    return int(USABLE_FRACTION * budget) - WORKER_BASELINE


@dataclass(frozen=True)
class Plan:
    """How a cube is cut into tasks; all sizes in bytes."""

    n_channels: int
    wave_chunk: int
    nx: int
    ny: int
    n_samples: int  # rows of the RSS (fiber-exposures) entering each channel's solve
    n_usable: int | None  # usable samples over the whole RSS (None when not counted)
    task_bytes: int
    budget_bytes: int | None  # per worker
    workers: int
    blas_threads: int
    output_dtype_bytes: int = 4
    reuse_cache_bytes: int | None = None  # weight reuse: the bound on each task's cache

    @property
    def n_chunks(self) -> int:
        return -(-self.n_channels // self.wave_chunk)

    @property
    def n_pixels(self) -> int:
        return self.nx * self.ny

    @property
    def output_bytes(self) -> int:
        """Size of the cube's flux + ivar + mask (uncompressed)."""
        return self.n_channels * self.n_pixels * (2 * self.output_dtype_bytes + 4)

    def chunk_slices(self) -> list[slice]:
        """Wavelength slices of the chunks (the last may be shorter)."""
        c = self.wave_chunk
        return [slice(k * c, min((k + 1) * c, self.n_channels)) for k in range(self.n_chunks)]

    def describe(self) -> str:
        budget = format_bytes(self.budget_bytes) if self.budget_bytes else "none given"
        usable = "" if self.n_usable is None else f" ({self.n_usable} usable samples in all)"
        last = self.n_channels - (self.n_chunks - 1) * self.wave_chunk
        return "\n".join(
            [
                f"channels:        {self.n_channels}",
                f"chunks:          {self.n_chunks} x {self.wave_chunk} channels (last {last})",
                f"pixels:          {self.nx} x {self.ny} = {self.n_pixels}",
                f"samples:         {self.n_samples} per channel{usable}",
                f"memory per task: {format_bytes(self.task_bytes)} (budget per worker: {budget})"
                + (
                    ""
                    if self.reuse_cache_bytes is None
                    else f", {format_bytes(self.reuse_cache_bytes)} of it the weight-reuse cache"
                ),
                f"workers:         {self.workers} x {self.blas_threads} BLAS thread(s)",
                f"output size:     {format_bytes(self.output_bytes)} (flux, ivar, mask uncompressed)",
            ]
        )


def make_plan(
    n_channels: int,
    n_samples: int,
    nx: int,
    ny: int,
    *,
    wave_chunk: int | None = None,
    max_memory: str | int | None = None,
    workers: int = 1,
    cores: int = 1,
    n_usable: int | None = None,
    output_dtype_bytes: int = 4,
    method: str = "crr",
    n_pairs: int = 0,
    n_neighbours: int = 0,
    align: int = 1,
    reuse: bool = False,
    reuse_factor: bool = True,
) -> Plan:
    """Choose the wavelength chunk length and check the plan can run (``method`` and ``n_pairs``,
    the number of stored correlation pairs, refine the memory estimate).

    ``wave_chunk`` given: used as is (checked against the budget when one is given too).
    Otherwise the largest chunk whose task fits ``max_memory`` (per worker; default 2GB, or what one
    channel's task needs where that is more), capped at
    ``MAX_AUTO_CHUNK`` and so that every worker gets at least two chunks when there are enough channels,
    then rounded down to a multiple of ``align`` where it is at least that long (weight reuse: a
    chunk solves whole blocks of ``align`` channels, so a partial block repeats their node solves).
    ``reuse``: weight reuse, whose task keeps a cache of solves: it gets what the budget (given, or
    the default) leaves, between :data:`REUSE_MIN_SOLVES` solves (:func:`solve_bytes`, with the
    eigenvectors where ``reuse_factor``: the code variant, and the paper variant on the pixel-side
    route) and :data:`REUSE_MAX_CACHE`.
    Raises :class:`PlanError` for plans that cannot work (no channels, no usable samples, an enormous
    grid, one channel over the budget).
    """
    if n_channels < 1:
        raise PlanError("the RSS has no wavelength channels")
    if n_samples < 1 or n_usable == 0:
        raise PlanError(
            "the RSS has no usable samples (every sample has ivar <= 0, non-finite flux or a bad mask "
            "bit); check the input or mask.bad_bits"
        )
    n_pixels = nx * ny
    if n_pixels > MAX_PIXELS:
        raise PlanError(
            f"the grid has {nx} x {ny} = {n_pixels} pixels (more than {MAX_PIXELS}); set "
            "grid.extent_arcsec or a larger grid.pixel_scale_arcsec (e.g. --set grid.extent_arcsec=40)"
        )
    workers = max(1, int(workers))
    budget = parse_memory(max_memory)
    min_cache = REUSE_MIN_SOLVES * solve_bytes(n_samples, n_pixels, reuse_factor) if reuse else None
    one = task_bytes(n_samples, n_pixels, 1, method, n_pairs, n_neighbours, min_cache, reuse_factor)
    if budget is not None and one > usable_bytes(budget):
        if reuse:
            raise PlanError(
                f"weight reuse needs about {format_bytes(one)} per task (a cache of "
                f"{REUSE_MIN_SOLVES} solves of {n_samples} samples x {n_pixels} pixels, "
                f"{format_bytes(min_cache)}, and its working memory) but a worker with a budget of "
                f"{format_bytes(budget)} has {format_bytes(max(usable_bytes(budget), 0))} for "
                "tasks; raise --max-memory, shrink the grid or build exact "
                "(crr.reuse_tolerance=0)"
            )
        raise PlanError(
            f"one channel needs about {format_bytes(one)} ({n_samples} samples x {n_pixels} pixels"
            f"{f', {n_pairs} correlation pairs' if n_pairs else ''}) but a worker with a budget of "
            f"{format_bytes(budget)} has {format_bytes(max(usable_bytes(budget), 0))} for tasks "
            f"({USABLE_FRACTION:.0%} of it less a {format_bytes(WORKER_BASELINE)} baseline); raise "
            "--max-memory or shrink the grid (grid.extent_arcsec, grid.pixel_scale_arcsec, "
            "output.correlation_max_sep_arcsec)"
        )
    if wave_chunk is not None and wave_chunk > 0:
        chunk = min(int(wave_chunk), n_channels)
        need = task_bytes(
            n_samples, n_pixels, chunk, method, n_pairs, n_neighbours, min_cache, reuse_factor
        )
        if budget is not None and need > usable_bytes(budget):
            raise PlanError(
                f"--wave-chunk {chunk} needs about {format_bytes(need)} per task, over the "
                f"{format_bytes(usable_bytes(budget))} a worker with a budget of {format_bytes(budget)} "
                "has for tasks; use a smaller --wave-chunk or give only --max-memory"
            )
    else:
        fixed = task_bytes(
            n_samples, n_pixels, 0, method, n_pairs, n_neighbours, min_cache, reuse_factor
        )
        if budget is None:
            # the default, or the smallest budget a task of one channel (of one reuse block)
            # fits in when it does not (the executors give their workers this limit)
            need = fixed + min(align, n_channels) * per_channel_bytes(n_samples, n_pixels)
            need += WORKER_BASELINE
            budget = max(parse_memory(DEFAULT_BUDGET), -(-need // USABLE_FRACTION) + 1)
            budget = int(budget)
        chunk = max(1, (usable_bytes(budget) - fixed) // per_channel_bytes(n_samples, n_pixels))
        chunk = min(chunk, MAX_AUTO_CHUNK, n_channels)
        if n_channels >= 4 * workers:
            chunk = min(chunk, max(-(-n_channels // (2 * workers)), min(align, chunk)))
        if chunk >= align:
            chunk = chunk // align * align
    blas = BLAS_THREADS  # fixed whatever the worker count: 1 vs 2 BLAS threads give other bits
    cache = None
    if reuse:
        rest = usable_bytes(budget or parse_memory(DEFAULT_BUDGET)) - task_bytes(
            n_samples, n_pixels, int(chunk), method, n_pairs, n_neighbours, 0, reuse_factor
        )
        cache = int(min(REUSE_MAX_CACHE, max(min_cache, rest)))
    return Plan(
        n_channels=n_channels,
        wave_chunk=int(chunk),
        nx=nx,
        ny=ny,
        n_samples=n_samples,
        n_usable=n_usable,
        task_bytes=task_bytes(
            n_samples, n_pixels, int(chunk), method, n_pairs, n_neighbours, cache, reuse_factor
        ),
        budget_bytes=budget,
        workers=workers,
        blas_threads=blas,
        output_dtype_bytes=output_dtype_bytes,
        reuse_cache_bytes=cache,
    )
