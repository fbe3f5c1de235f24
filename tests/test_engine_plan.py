"""Chunk planning from a memory budget, and refusals of absurd plans."""

import pytest

from crrxr.engine.plan import (
    MAX_AUTO_CHUNK,
    NEIGHBOUR_BYTES,
    PAIR_BYTES,
    REUSE_MAX_CACHE,
    REUSE_MIN_SOLVES,
    PlanError,
    make_plan,
    parse_memory,
    solve_bytes,
    task_bytes,
    usable_bytes,
)


def test_parse_memory():
    assert parse_memory("2GB") == 2_000_000_000
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(None) is None
    with pytest.raises(PlanError, match="2GB"):
        parse_memory("lots")


def test_budget_bounds_the_task_and_chunks_cover_the_axis():
    n_chan, n_samp, nside = 4563, 1143, 49
    for budget in ("800MB", "1GB", "4GB"):
        plan = make_plan(n_chan, n_samp, nside, nside, max_memory=budget, workers=2, cores=2)
        assert plan.task_bytes <= usable_bytes(parse_memory(budget)) < parse_memory(budget)
        assert 1 <= plan.wave_chunk <= MAX_AUTO_CHUNK
        slices = plan.chunk_slices()
        assert slices[0].start == 0 and slices[-1].stop == n_chan
        assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
        assert len(slices) == plan.n_chunks
        # a larger chunk would not fit or is capped
        bigger = task_bytes(n_samp, nside * nside, plan.wave_chunk + 1)
        assert bigger > usable_bytes(parse_memory(budget)) or plan.wave_chunk in (
            MAX_AUTO_CHUNK,
            -(-n_chan // 4),
        )


def test_explicit_chunk_and_describe():
    plan = make_plan(100, 171, 17, 17, wave_chunk=7, workers=2, cores=2)
    assert (
        plan.wave_chunk == 7 and plan.n_chunks == 15 and plan.chunk_slices()[-1] == slice(98, 100)
    )
    text = plan.describe()
    for word in ("channels", "chunks", "pixels", "samples", "memory per task", "output size"):
        assert word in text
    assert plan.blas_threads == 1


def test_blas_threads_fixed_whatever_the_workers():
    # 1 vs 2 BLAS threads give different bits: the count may not follow the worker count (issue #9)
    assert make_plan(10, 10, 5, 5, wave_chunk=2, workers=1, cores=8).blas_threads == 1
    assert make_plan(10, 10, 5, 5, wave_chunk=2, workers=3, cores=8).blas_threads == 1


def test_refusals():
    with pytest.raises(PlanError, match="one channel needs"):
        make_plan(100, 1143, 49, 49, max_memory="10MB")
    with pytest.raises(PlanError, match="no usable samples"):
        make_plan(100, 1143, 49, 49, n_usable=0)
    with pytest.raises(PlanError, match="grid.extent_arcsec"):
        make_plan(100, 1143, 2001, 2001)
    with pytest.raises(PlanError, match="--wave-chunk"):
        make_plan(5000, 1143, 49, 49, wave_chunk=100_000, max_memory="1GB")
    with pytest.raises(PlanError, match="no wavelength"):
        make_plan(0, 10, 5, 5)


def test_shepard_and_pairs_in_the_estimate():
    crr = make_plan(100, 1143, 49, 49, wave_chunk=10)
    shep = make_plan(100, 1143, 49, 49, wave_chunk=10, method="shepard")
    assert shep.task_bytes < crr.task_bytes
    assert (
        make_plan(100, 1143, 49, 49, wave_chunk=10, n_pairs=10**6).task_bytes
        == crr.task_bytes + PAIR_BYTES * 10**6
    )
    more = make_plan(100, 1143, 49, 49, wave_chunk=10, method="shepard", n_neighbours=10**6)
    assert more.task_bytes == shep.task_bytes + NEIGHBOUR_BYTES * 10**6


@pytest.mark.parametrize("workers", [1, 2, 8])
@pytest.mark.parametrize("n_chan", [65, 130, 700, 4563])
@pytest.mark.parametrize("budget", [None, "800MB", "4GB"])
def test_auto_chunks_are_whole_reuse_blocks(workers, n_chan, budget):
    """With weight reuse a chunk solves every 64-channel block it touches: automatic chunks are
    whole blocks (a partial block would repeat its node solves), and cover the axis."""
    plan = make_plan(n_chan, 1143, 49, 49, max_memory=budget, workers=workers, align=64)
    assert plan.wave_chunk % 64 == 0 and plan.wave_chunk <= max(MAX_AUTO_CHUNK, 64)
    plain = make_plan(n_chan, 1143, 49, 49, max_memory=budget, workers=workers)
    assert plan.wave_chunk == max(64, plain.wave_chunk // 64 * 64)
    assert plan.task_bytes <= usable_bytes(plan.budget_bytes)
    slices = plan.chunk_slices()
    assert slices[0].start == 0 and slices[-1].stop == n_chan


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("budget", [None, "1.5GB", "2GB", "4GB", "16GB"])
def test_reuse_cache_gets_what_the_budget_leaves(budget, workers):
    """A weight-reuse task keeps solves in a bounded cache: the plan gives it what the budget (or
    the default) leaves beside the task's working memory, at least REUSE_MIN_SOLVES solves and at
    most REUSE_MAX_CACHE, and counts it in the task's memory."""
    n_samp, nside = 1143, 49
    plan = make_plan(
        4563, n_samp, nside, nside, max_memory=budget, workers=workers, align=64, reuse=True
    )
    exact = make_plan(4563, n_samp, nside, nside, max_memory=budget, workers=workers, align=64)
    cache = plan.reuse_cache_bytes
    assert REUSE_MIN_SOLVES * solve_bytes(n_samp, nside * nside) <= cache <= REUSE_MAX_CACHE
    assert plan.task_bytes <= usable_bytes(plan.budget_bytes)
    assert cache == REUSE_MAX_CACHE or plan.task_bytes == usable_bytes(plan.budget_bytes)
    assert plan.task_bytes > exact.task_bytes + cache and exact.reuse_cache_bytes is None
    assert plan.wave_chunk % 64 == 0
    assert "weight-reuse cache" in plan.describe()
    assert "weight-reuse cache" not in exact.describe()


def test_reuse_refuses_a_budget_below_its_smallest_cache():
    make_plan(4563, 1143, 49, 49, max_memory="800MB", align=64)  # exact solves fit
    # the paper variant keeps no eigendecomposition: its smallest cache is W only
    paper = make_plan(
        4563, 1143, 49, 49, max_memory="1.2GB", align=64, reuse=True, reuse_factor=False
    )
    assert paper.reuse_cache_bytes >= REUSE_MIN_SOLVES * solve_bytes(1143, 49 * 49, False)
    with pytest.raises(PlanError, match="weight reuse needs"):
        make_plan(4563, 1143, 49, 49, max_memory="1.2GB", align=64, reuse=True)
    with pytest.raises(PlanError, match=r"weight reuse needs .*crr\.reuse_tolerance=0"):
        make_plan(4563, 1143, 49, 49, max_memory="800MB", align=64, reuse=True)
    with pytest.raises(PlanError, match="weight reuse needs"):
        make_plan(4563, 1143, 49, 49, wave_chunk=64, max_memory="800MB", reuse=True)


@pytest.mark.parametrize(
    ("n_samp", "nside", "reuse"), [(1143, 49, False), (1143, 49, True), (5000, 90, True)]
)
def test_without_a_budget_the_default_grows_to_what_one_block_needs(n_samp, nside, reuse):
    """No --max-memory: the 2 GB default, unless a task of one reuse block (one channel for exact
    builds) does not fit in it; then the smallest budget it fits in (the executors give their
    workers this limit, so a worker is not paused or restarted under a task the plan knew about)."""
    plan = make_plan(4563, n_samp, nside, nside, align=64 if reuse else 1, reuse=reuse)
    assert plan.task_bytes <= usable_bytes(plan.budget_bytes)
    assert plan.wave_chunk >= (64 if reuse else 1)
    one = task_bytes(
        n_samp, nside * nside, plan.wave_chunk, n_neighbours=0, reuse_cache=plan.reuse_cache_bytes
    )
    assert one == plan.task_bytes
    if plan.budget_bytes > parse_memory("2GB"):
        smaller = int(plan.budget_bytes * 0.9)
        assert usable_bytes(smaller) < task_bytes(
            n_samp, nside * nside, 64, reuse_cache=REUSE_MIN_SOLVES * solve_bytes(n_samp, nside**2)
        )
    else:
        assert plan.budget_bytes == parse_memory("2GB")
    assert (plan.budget_bytes > parse_memory("2GB")) == (n_samp == 5000)


@pytest.mark.parametrize(("kind", "paper_keeps"), [("bundle", False), ("lenslets", True)])
def test_reuse_plans_the_eigendecompositions_the_variant_keeps(kind, paper_keeps):
    """The code variant's reuse solves keep their eigendecomposition (moves, removals); the paper
    variant's only on the pixel-side route (moves), where a channel's samples outnumber its
    selected pixels: a lenslet array, not a 19 x 9 bundle. The estimate on the user path plans
    the paper variant like the code variant exactly where it keeps them, and less elsewhere."""
    from crrxr.engine.build import estimate
    from crrxr.simulate import simulate_rss

    shape = {"bundle": 19} if kind == "bundle" else {"lenslets": 400}
    profile = "manga-19" if kind == "bundle" else "lenslet-0.75"
    rss = simulate_rss(None, nwave=128, noise=30, seed=1, **shape)
    plans = {
        variant: estimate(
            rss,
            profile=profile,
            overrides={"crr.reuse_tolerance": 0.01, "crr.variant": variant},
            wave_chunk=64,
            max_memory="8GB",  # the cache at its cap: the working memory tells
        )
        for variant in ("code", "paper")
    }
    code, paper = plans["code"].task_bytes, plans["paper"].task_bytes
    assert (paper == code) if paper_keeps else (paper < code), (kind, paper, code)
