"""CRR weights reused across wavelength: exact solves at node channels, linear interpolation of W
between them, with a per-channel error bound and adaptive refinement (issue #14).

Everything is defined on GLOBAL channel indices, so a cube does not depend on where the engine's
chunk boundaries fall:

- Blocks: channel c belongs to block ``c // block``; block k is solved over the closed range
  ``[k*block, min((k+1)*block, n_chan - 1)]`` (its last channel is also the next block's first).
  Each block is processed from a fresh :class:`~crrxr.core.slice.ChannelSolver`, so its results
  depend only on its own channels; where one call processes both, the next block takes over the
  solve of that shared channel instead of repeating it (same inputs, same bits: a solve is a pure
  function of its inputs and carries no state from earlier channels).
- Selections (the interval rule): every channel keeps its own solved pixel set (the
  ``select_radius`` selection, from that channel's own positions, as in an exact build). A pixel
  that enters or leaves the selection changes W discontinuously (docs/benchmarks.md), so W is
  interpolated only between node weights on the channel's own selection. In a block whose
  selection changes, the whole block is one run (code variant; paper variant where its solves take
  the pixel-side route, more usable samples than selected pixels: lenslets): a node solved on its
  own selection is moved to each other selection its segments need by an exact low-rank update
  (:func:`crrxr.core.pixel_update.change_pixels`, ~1e-10 relative, as good as a solve; for the
  paper variant up to its floor share, the weight of modes at the singular-value floor, which
  it keeps or drops differently from an exact solve: <= :data:`FLOOR_SHARE_MAX`; cached per node
  and selection), and each selection's channels get their own check and bound. A channel with
  samples of its own masked needs its nodes' own solves on its selection (the removal works on
  their eigendecomposition), so it is solved exactly where they lie on others; a block with more
  such channels than runs of one selection (code variant), and the paper variant on the
  sample-side route, keep one run per selection instead, each with its own nodes.
- Regular channels: within a run, the usable-sample set shared by most channels (ties: the one
  seen first) is the run's set. Channels whose usable set is the run's less 1 to :data:`MASK_MAX`
  samples (a cosmic ray, a bad column; positions and seeing finite) take part too, with the code
  variant (below); any other channel (more samples masked, a sample usable that the run's set
  lacks, the paper variant) is solved exactly.
- Nodes: the run's set solved exactly at the node channel's positions and seeing (for a regular
  channel that is its own exact solve). A node channel with samples of its own masked gets its
  weights from that solve with those samples removed by
  :func:`crrxr.core.sample_removal.remove_samples` (a low-rank update of the solve's
  eigendecomposition, ~1e-10 relative; code variant, sample-side gram route), bounded by the
  quadrature's own error estimate: it is not an exact channel, but as good as one.
- Refinement: the first and last of a run's channels are nodes. A segment between two nodes with
  channels inside is checked at its middle channel m (a node): D = W_lin(m) - W(m), the error of
  interpolating over the whole segment (in the run's set). A segment whose nodes or middle have an
  effective condition number (of the kept modes weighted by their share of W,
  :class:`crrxr.core.crr.CRRWeights`) above :data:`COND_MAX`, or above :data:`JITTER_MAX` over the
  kernel's value at the truncation radius relative to its peak (at the block's largest seeing:
  sample-pixel pairs crossing the cut make W jitter from channel to channel, amplified by the
  condition), is not interpolated; both halves are refined. Assuming a smooth second derivative
  of W in wavelength, the error of interpolating channel k between the nodes a < k < b of its
  half (m is a node) is
  E_k = D (k-a)(b-k) / ((m-i)(j-m)). The bound stored for k is
  ``SAFETY * max_pixels |D f_k| / sigma_k * (k-a)(b-k)/((m-i)(j-m))`` in units of the pixel's
  noise sigma (sigma_k from the W applied, f_k the channel's own fiber fluxes, so bright lines
  count), and the variance bound ``SAFETY * max_pixels |var_lin(m)/var(m) - 1| * ratio``. Both
  maxima run over the pixels the channel keeps: a pixel whose coverage lies above the LOWCOV
  threshold by more than its certified margin is LOWCOV (ivar 0) in the exact cube as well, so its
  error never reaches the data (near the bundle's edge these pixels carried the largest relative
  variance errors, ~1.5-2x the rest). A channel
  with samples of its own masked is interpolated between its nodes' weights with those samples
  removed, and its D, variance and bound are measured on the removed weights of i, m and j. The
  bound holds as far as the curvature model does; :data:`SAFETY` was set from measurements against
  exact solves (docs/benchmarks.md), it is not a proof. Where the nodes are paper-variant solves
  moved to the channel's selection, their floor shares phi_n (what the move may differ from an
  exact solve there) are added: sum_n |L_n(k)| phi_n times the largest |flux| / sigma of a kept
  pixel, and 2 phi + phi^2 to the variance bound. A half whose bound exceeds ``tolerance``
  (or :data:`IVAR_RTOL` for the variance) for any of its channels tries the quadratic next.
- Quadratic: inside a refined segment (i, j) with middle m, whose parent segment had the nodes
  (i, j, o) (o its other end), the quadratic through the parent's three nodes is checked at m:
  D3 = P_ijo(m) - W(m). Assuming a smooth third derivative, the quadratic through (i, m, j) errs
  at k by D3 |(k-i)(k-m)(k-j)| / |(m-i)(m-j)(m-o)|; a half whose linear bound failed is
  interpolated by that quadratic if its bound (the same form, with :data:`SAFETY_QUADRATIC`) holds
  for every channel. Once the first half has been refined (its middle q solved), the second
  half may also take the quadratic through (i, m, j) itself, checked at q: D3 = P_imj(q) - W(q),
  error at k D3 |(k-i)(k-m)(k-j)| / |(q-i)(q-m)(q-j)|: one solve instead of the second half's own
  middle (in the red at DAR 2", 3 solves a block instead of 4).
- Cubic: two levels down, the cubic through the segment's ends and its parent's and
  grandparent's other ends (o, g) is checked at m: D4 = P_ijog(m) - W(m); the cubic through
  (i, m, j, o) errs at k by D4 |(k-i)(k-m)(k-j)(k-o)| / |(m-i)(m-j)(m-o)(m-g)|, under
  :data:`SAFETY_CUBIC`. A half none of these bound is refined (its middle solved, recursively).
  Near the DAR reference wavelength, where W curves fast, the quadratic halves the solves and the
  cubic saves another ~10 %. What is left (runs of two channels or
  fewer, channels between nodes of a refused segment, removals that do not apply) is solved
  exactly.
- Masks: an interpolated channel's masks come from its own (interpolated) coverage diag(W N~ W^T).
  Where a pixel's coverage lies within the certified relative margin of the LOWCOV threshold, its
  LOWCOV bit (and with it DONOTUSE and ivar = 0) may differ from the exact solve's: that pixel sits
  on the threshold to within the accuracy of the weights, and :attr:`ReuseResult.borderline` counts
  such pixels per channel. (Solving those channels exactly instead, to keep masks identical, cost
  57 % of all exact solves on five 127 x 9 windows: docs/benchmarks.md.)

The weights actually applied give the flux, ivar, masks, correlations, PSF and LSF of every
channel, so errors never misstate the data. A block keeps its solves, eigendecompositions, moved
weights and removals in a cache bounded in bytes (``cache_bytes``); each is a pure function of the
block's inputs, so what the cache drops is recomputed with the same bits: the bound sets time and
memory, never the cube. Channels whose solve raises are handled by re-solving their whole
block channel by channel (:func:`crrxr.core.reconstruct_block`), which marks them failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from crrxr.core import masks
from crrxr.core.block import BlockResult, reconstruct_block
from crrxr.core.bounded_cache import BoundedCache
from crrxr.core.config import CoreConfig
from crrxr.core.covariance import ivar_from_variance, propagated_variance
from crrxr.core.crr import GRAM_RTOL
from crrxr.core.grid import Grid
from crrxr.core.kernel import cut_level, radius_for_level
from crrxr.core.lsf import lsf_from_sums, squared_lsf
from crrxr.core.pixel_update import change_pixels
from crrxr.core.sample_removal import remove_samples
from crrxr.core.slice import ChannelSolver, InputError, validate_samples

#: Channels per block (global channel grid); the largest node spacing.
BLOCK = 64
#: Factor on the curvature estimate (a second derivative varying within a segment), for the flux
#: and the variance bound alike. With the kernel table linear in radius the error reached 2.8x the
#: estimate (its kinks made W jitter) and this was 4; with the cubic table the largest actual error
#: over the estimate was 1.12 (flux) and 1.09 (variance) on 17 windows of 128 channels under this
#: factor's own plans (19 x 9 and 127 x 9, DAR 1" and 2", code and paper variants, 1.19" and 1.5"
#: seeing; docs/benchmarks.md), and this was 2. With the bounds taken per channel over the pixels
#: it keeps (not over pixels LOWCOV in both cubes, whose errors had padded the maximum) the
#: largest was 1.32 (flux, channels with masked samples) and 1.57 (variance) over three whole
#: 127 x 9 x 4563 cubes (DAR 1" and 2", 0.1 % masked), so 3 leaves >= 1.9x margin; on 6 windows of
#: 512 channels it took the same solves as 2 but one (docs/benchmarks.md).
SAFETY = 3.0
#: The same factor for quadratic interpolation (a segment's three nodes, checked against its
#: parent's quadratic: a constant third derivative, estimated at the parent's larger scale). The
#: largest actual error over that model was 2.07 for the flux and 1.41 for the variance on the 8
#: of 10 windows of 128 channels that used it (127 x 9; 1.19" and 1.5" seeing, DAR 1" and 2", 0
#: and 0.1 % masked; docs/benchmarks.md), above SAFETY, so it gets its own factor (>= 1.93x
#: margin).
SAFETY_QUADRATIC = 4.0
#: The same factor for cubic interpolation (four nodes: a refined segment's three and its parent's
#: other end, checked against the cubic through the segment's ends and its parent's and
#: grandparent's other ends: a constant fourth derivative, estimated at up to four times the
#: segment's scale). Under a factor of 4 the largest actual error over that model was 2.9 for the
#: flux and 3.3 for the variance (127 x 9, DAR 2", channels 1024-1535, near the DAR reference;
#: docs/benchmarks.md), so it gets twice the quadratic's factor (>= 2.4x margin there).
SAFETY_CUBIC = 8.0
#: Largest effective condition number (:class:`crrxr.core.crr.CRRWeights`: that of the kept modes
#: weighted by their share of W; s_max / s_min for the code variant) of the exact solves around
#: which W is interpolated. With the kernel table linear in radius the bound failed from ~1e4 (1.5"
#: seeing: 1.11x at 9.6e3, 1.6x at 3e4) and this was 8e3: the table's kinks, amplified by the
#: condition, made W jitter from channel to channel. With the table cubic in radius
#: (:class:`crrxr.core.kernel.KernelTable`) the curvature model holds to within 4 % at 4.4e4
#: (127 x 9 at 1.5" seeing, largest error 0.26 x the bound on every window under SAFETY 4), so the
#: limit sits just above the largest condition of MaNGA bundles at typical seeing. The code
#: variant on lenslets at a 1e-6 floor (condition 6e5-8e5) broke the bound by up to 11x (modes
#: crossing the floor between channels): W there is not smooth in wavelength.
COND_MAX = 5e4
#: Largest product of the effective condition number and the kernel's value at its truncation
#: radius over its peak (:func:`crrxr.core.kernel.cut_level`, at the block's largest seeing) around
#: which W is interpolated: pairs crossing the cut step A by that level, and W by ~condition x level.
#: The bound held up to 1e-3 (the validated 1.19" cubes with a 6" cut: level <= 1.6e-7, condition
#: <= 7.8e3 in the blue) and at 6e-3-8e-3 (1.5" seeing, 6" cut, condition 8.7e3-9.6e3), and failed
#: from ~1e-2 (docs/benchmarks.md).
JITTER_MAX = 2e-3
#: Largest floor share (:class:`crrxr.core.pixel_update.PixelChange`, 0.01 floor / lam) accepted
#: from a paper-variant solve moved to another selection: how far its W may differ from an exact
#: solve there because modes near the singular-value floor are kept or dropped differently. At the
#: lenslet profile's floor 1e-6 (lam 1e-3) it is 1e-5; the largest deviation measured on
#: 2400-lenslet channels was 7.2e-6 of max|W|, 2.0e-5 sigma in flux and 2.9e-7 in variance over
#: the pixels the cube keeps (docs/benchmarks.md). The share is an empirical model for floors far
#: below lam, so moves are refused from floor / lam = 0.01 (their channels are solved exactly).
FLOOR_SHARE_MAX = 1e-4
#: Largest relative variance error accepted for an interpolated channel (0.1 %).
IVAR_RTOL = 1e-3
#: Most samples a channel may have masked beyond its run's usable set and still be interpolated
#: (by sample removal at its nodes). An interpolated channel needs three removals; one costs ~9 ms
#: for one sample, ~25 ms for three, ~60 ms for six, a solve ~300 ms (127 x 9, docs/benchmarks.md).
MASK_MAX = 3
#: Pixel rows formed at a time for a channel interpolated with removed samples (stays in cache).
ROW_BLOCK = 128
#: Default bound on the bytes a block keeps of exact solves, eigendecompositions, moved weights and
#: sample removals (:class:`crrxr.core.bounded_cache.BoundedCache`). A 127 x 9 MaNGA block with DAR
#: 2" in the blue held up to ~580 MB unbounded (36 moved weights of 12.5 MB); the engine passes
#: what its memory budget leaves (crrxr.engine.plan).
CACHE_BYTES = 2**30


@dataclass(frozen=True)
class ReuseResult:
    """A block of channels from :func:`reconstruct_block_reuse`.

    block: the reconstruction (like :func:`crrxr.core.reconstruct_block`'s result). exact (n_chan,)
    bool: channel solved exactly. bound (n_chan,) float: certified bound on |flux - exact flux| in
    units of the pixel's noise sigma (0 for exact channels). borderline (n_chan,) int: pixels whose
    coverage lies within the certified margin of the LOWCOV threshold (0 for exact channels): the
    only pixels whose mask may differ from the exact solve's. nodes (n_chan,) int: how many node
    solves the channel's weights combine (0 exact, 1 its own node's solve with samples removed,
    2 linear, 3 quadratic, 4 cubic interpolation). var_bound (n_chan,) float: certified bound on
    |var / exact var - 1| over the pixels the channel keeps (0 for exact channels).
    """

    block: BlockResult
    exact: np.ndarray
    bound: np.ndarray
    borderline: np.ndarray
    nodes: np.ndarray
    n_solves: int = 0  # exact solves done, including those outside the output range
    n_moves: int = 0  # node solves moved to another pixel selection (crrxr.core.pixel_update)
    peak_cache: int = 0  # most bytes of solves, moves and removals a block held (cache_bytes)
    var_bound: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def read_range(start: int, stop: int, n_chan: int, block: int = BLOCK) -> tuple[int, int]:
    """Channels ``[lo, hi)`` that outputs ``[start, stop)`` need: their whole blocks plus each last
    block's closing node."""
    if not 0 <= start < stop <= n_chan:
        raise InputError(f"channel range {start}:{stop} is outside 0..{n_chan}")
    lo = (start // block) * block
    hi = min(((stop - 1) // block + 1) * block + 1, n_chan)
    return lo, hi


class _Applier(ChannelSolver):
    """A ChannelSolver whose weights can be set from outside (the interpolated W)."""

    injected: tuple | None = None

    def _crr_weights(self, x, y, fw, usable, geom):
        if self.injected is not None:
            return self.injected
        return super()._crr_weights(x, y, fw, usable, geom)


def _mode_index(keys: list[bytes]) -> bytes:
    counts: dict[bytes, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    best = max(counts.values())
    return next(k for k in keys if counts[k] == best)


def safety_factor(n_nodes: int) -> float:
    """The bound's factor on the curvature model of interpolation through ``n_nodes`` solves
    (2 linear, 3 quadratic, 4 cubic)."""
    return {2: SAFETY, 3: SAFETY_QUADRATIC, 4: SAFETY_CUBIC}[n_nodes]


def _lagrange(nodes: tuple[int, ...], k: np.ndarray) -> np.ndarray:
    """Lagrange coefficients (len(nodes), len(k)) of the polynomial through ``nodes`` at ``k``."""
    k = np.asarray(k, dtype=float)
    out = np.ones((len(nodes), k.size))
    for a, na in enumerate(nodes):
        for b, nb in enumerate(nodes):
            if a != b:
                out[a] *= (k - nb) / (na - nb)
    return out


def _omega(nodes: tuple[int, ...], k: np.ndarray) -> np.ndarray:
    """|prod_n (k - n)|: the interpolation error's shape for a constant next derivative."""
    k = np.asarray(k, dtype=float)
    return np.abs(np.prod([k - n for n in nodes], axis=0))


@dataclass(frozen=True)
class _Check:
    """The polynomial through ``nodes`` compared with the exact solve at node ``at``:
    D = sum_n L_n(at) W_n - W(at), with var_px (n_sel,) the relative error of diag(W N W^T) that
    D makes at each pixel there, var_rel its largest over the pixels not LOWCOV at ``at``, and
    cover_rel the largest relative error of diag(W W^T)."""

    nodes: tuple[int, ...]
    at: int
    D: np.ndarray
    var_px: np.ndarray
    var_rel: float
    cover_rel: float

    def model(self, nodes: tuple[int, ...]) -> _Model:
        """Interpolation through ``nodes`` (as many as the check's) bounded by this check."""
        return _Model(nodes, self.nodes, self.at, self.D, self.var_px, self.var_rel, self.cover_rel)


@dataclass(frozen=True)
class _Model:
    """Channels interpolated through ``nodes`` (2: linear, 3: quadratic) with the error model of a
    constant next derivative, measured by a check of the same degree (:class:`_Check`): the error
    at channel k is D ratio(k), ratio(k) = omega_nodes(k) / omega_check_nodes(check_at)."""

    nodes: tuple[int, ...]
    check_nodes: tuple[int, ...]
    check_at: int
    D: np.ndarray
    var_px: np.ndarray
    var_rel: float
    cover_rel: float

    def ratio(self, k: np.ndarray) -> np.ndarray:
        return _omega(self.nodes, k) / _omega(self.check_nodes, np.array([self.check_at]))[0]

    @property
    def safety(self) -> float:
        return safety_factor(len(self.nodes))


class _BlockPlan:
    """Exact solves, interpolation and bounds for one block (channels ``lo..hi`` inclusive, given
    as offsets into the caller's arrays).

    Interpolated channels are never formed one by one: for the channels k of a half,
    W_k = sum_n L_n(k) W_n over its 2 or 3 nodes (Lagrange coefficients L), so W_k f_k,
    diag(W_k N_k W_k^T) and diag(W_k W_k^T) come from a few matrix products over all k at once
    (the expansion of the square, node pair by node pair, is exact algebra).
    """

    def __init__(
        self,
        arrays,
        grid: Grid,
        config: CoreConfig,
        tolerance: float,
        carried: dict[int, tuple] | None = None,
        *,
        cache_bytes: int = CACHE_BYTES,
        outputs: Iterable[int] = (),
        want: Iterable[int] = (),
        lsf2: np.ndarray | None = None,
    ) -> None:
        self.x, self.y, self.fw, self.f, self.iv, self.usable, self.dead = arrays
        # output channels (offsets) whose images are formed as soon as their weights are final,
        # so that no W is kept for them; those wanted (PSF, correlation) get them from weights_of
        self.outputs, self.want = set(outputs), set(want)
        # squared LSF dispersions (n_samples, n, k) pushed through each output channel's weights
        self.lsf2 = lsf2
        # offset -> (flux, ivar, mask images, route) of exact output channels; -> (n_sel, k + 1)
        # sums W sigma^2 (k LSFs) and W 1 of every output channel
        self.images: dict[int, tuple] = {}
        self.lsf_sums: dict[int, np.ndarray] = {}
        # offset -> (usable set bytes, weights tuple): the previous block's solve of its closing
        # channel, this block's first (a solve is a pure function of its inputs, so taking it
        # over gives the same bits as solving again: chunking does not change the cube)
        self.carried = carried or {}
        self.closing: dict[int, tuple] = {}
        self._last = -1
        self.solver = _Applier(grid, config)
        self.tolerance = tolerance
        # solves, their eigendecompositions, moved weights and removals, within cache_bytes; each
        # is a pure function of the block's inputs, so one dropped is recomputed with the same bits
        self.cache = BoundedCache(cache_bytes)
        # usable set bytes -> the set (n_samples,) bool and its indices
        self._usable_of: dict[bytes, np.ndarray] = {}
        self._use_of: dict[bytes, np.ndarray] = {}
        # (offset, usable key) of solves whose eigendecomposition is not needed any more
        self._factorless: set[tuple[int, bytes]] = set()
        # exact channel offset -> the usable key of its solve (ChannelSolver's weights tuple
        # (sel_idx, use_idx, W, route, ...) from _solution)
        self.weights: dict[int, bytes] = {}
        # offset -> (nodes, their coefficients, flux, var, cover) of an interpolated channel
        self.interpolated: dict[int, tuple] = {}
        self.deadpix: dict[int, np.ndarray] = {}
        self.bound: dict[int, float] = {}
        self.var_bound: dict[int, float] = {}  # bound on |var / exact var - 1|
        self.borderline: dict[int, int] = {}
        # channel offset -> the usable key of the run's set solved there (interpolation nodes); for
        # a channel of that set, its exact solve
        self.nodes: dict[int, bytes] = {}
        self.route: dict[int, str] = {}  # node offset -> its solve's route
        self._regular: set[int] = set()
        self._base = np.zeros(0, dtype=bool)
        # offset -> (removed positions in the nodes' use_idx, the removal at each of its nodes:
        # kept for wanted channels only, None for the others)
        self.masked: dict[int, tuple] = {}
        # offset -> its selection's key; key -> the selection (grid.size,) bool
        self.sel_key: dict[int, bytes] = {}
        self._sel: dict[bytes, np.ndarray] = {}
        self.n_solves = 0
        self.n_moves = 0
        # (node, selection key) -> the floor share of the node's solve moved there (paper variant)
        self._floor_share: dict[tuple[int, bytes], float] = {}
        # COND_MAX, lowered where the kernel cut is too close (:func:`condition_limit`)
        self.cond_max = COND_MAX

    def _col(self, a: np.ndarray, c: int) -> np.ndarray:
        return np.ascontiguousarray(a[:, c])

    def _geometry(self, c: int):
        return self.solver._geometry(
            self._col(self.x, c), self._col(self.y, c), self._col(self.dead, c)
        )

    def _key(self, usable: np.ndarray) -> bytes:
        key = usable.tobytes()
        if key not in self._usable_of:
            self._usable_of[key] = usable.copy()
            self._use_of[key] = np.flatnonzero(usable)
        return key

    def _solution(self, c: int, key: bytes, factor: bool = False) -> tuple:
        """The solve of channel ``c`` with the usable set ``key`` (from the cache, else solved);
        ``factor``: with its eigendecomposition (solved again where it was dropped)."""
        ck = ("solve", c, key)
        out = self.cache.get(ck, lambda: self._solve(c, self._usable_of[key]))
        if factor:
            if out[6] is None and (c, key) in self._factorless:  # dropped here: solved again
                self.cache.discard(ck)
                out = self.cache.get(ck, lambda: self._solve(c, self._usable_of[key]))
            return out
        if (c, key) in self._factorless and out[6] is not None:
            out = (*out[:6], None)
            self.cache.put(ck, out)
        return out

    def _node(self, c: int, factor: bool = False) -> tuple:
        return self._solution(c, self.nodes[c], factor)

    def exact(self, c: int) -> tuple:
        """Channel ``c`` solved exactly with its own usable set (its images formed at once where it
        is an output channel)."""
        if c not in self.weights:
            key = self._key(self._col(self.usable, c))
            self.weights[c] = key
            self.bound[c] = 0.0
            out = self._solution(c, key)
            if c in self.outputs and c not in self.want:
                self.images[c] = self._exact_images(c, out)
            if c in self.outputs and self.lsf2 is not None:
                self.lsf_sums[c] = out[2] @ self._lsf_columns(c, out[1])
            return out
        return self._solution(c, self.weights[c])

    def _exact_images(self, c: int, weights: tuple) -> tuple:
        self.solver.injected = weights
        try:
            res = self.solver.solve(
                self._col(self.x, c),
                self._col(self.y, c),
                self._col(self.fw, c),
                self.f[:, c],
                self.iv[:, c],
                self.usable[:, c],
                self.dead[:, c],
            )
        finally:
            self.solver.injected = None
        return res.flux, res.ivar, res.mask, res.solver

    def _lsf_columns(self, c: int, use_idx: np.ndarray, drop: np.ndarray | None = None):
        """(len(use_idx), k + 1): the k squared LSFs and 1 at channel ``c`` over ``use_idx``,
        rows ``drop`` zero (samples removed at c)."""
        X = np.column_stack([self.lsf2[use_idx, c, :], np.ones(use_idx.size)])
        if drop is not None:
            X[drop] = 0.0
        return X

    def _solve(self, c: int, usable: np.ndarray) -> tuple:
        key = usable.tobytes()
        taken = self.carried.get(c)
        if (
            taken is not None
            and taken[0] == key
            and (taken[1][6] is not None or not self.solver.keep_factor)
        ):
            return taken[1]
        self.solver.injected = None
        self.n_solves += 1
        out = self.solver._crr_weights(
            self._col(self.x, c),
            self._col(self.y, c),
            self._col(self.fw, c),
            usable,
            self._geometry(c),
        )
        if c == self._last:
            self.closing = {c: (key, out)}
        return out

    def node(self, c: int) -> tuple:
        """The run's usable set solved at channel ``c`` (the channel's own exact solve where that is
        its own set): what W is interpolated from."""
        if c not in self.nodes:
            if c in self._regular:
                self.exact(c)
                self.nodes[c] = self.weights[c]
            else:
                self.nodes[c] = self._key(self._base)
            self.route[c] = self._node(c)[3]
        return self._node(c)

    def run(self, lo: int, hi: int) -> None:
        """Plan and solve every channel of ``lo..hi``."""
        self._last = hi
        block_use = self.usable[:, lo : hi + 1]
        cfg = self.solver.config
        self.cond_max = condition_limit(cfg, self.fw[:, lo : hi + 1][block_use])
        starts = [lo]
        # the solves take the pixel-side gram route where samples outnumber selected pixels
        pixel_side = True
        for c in range(lo, hi + 1):
            geom = self._geometry(c)
            pixel_side &= int(np.count_nonzero(self.usable[:, c])) > int(np.count_nonzero(geom[3]))
            self.deadpix[c] = geom[4].copy()
            key = np.packbits(geom[3]).tobytes()
            if key not in self._sel:
                self._sel[key] = geom[3].copy()
            if c > lo and key != self.sel_key[c - 1]:
                starts.append(c)
            self.sel_key[c] = key
        keys = [np.packbits(block_use[:, c]).tobytes() for c in range(block_use.shape[1])]
        masked = len(set(keys)) > 1
        off = len(keys) - keys.count(_mode_index(keys))  # channels with samples of their own masked
        # one run over selection changes (nodes moved to each channel's selection) where moves
        # apply (code variant; paper variant on the pixel-side route), unless, for the code
        # variant, more channels have samples of their own masked than there are runs: their
        # removals need the node's own selection, so there each run of one selection gets its own
        # nodes (the paper variant has no removals: such channels are solved exactly either way)
        code = cfg.variant == "code"
        across = 1 < len(starts) and (off <= len(starts) if code else pixel_side)
        # node eigendecompositions are kept only where removals or moves may use them
        self.solver.keep_factor = (code and masked) or across
        if across:
            self._run(lo, hi)
            return
        ends = [s - 1 for s in starts[1:]] + [hi]
        for a, b in zip(starts, ends):
            self._run(a, b)

    def _run(self, a: int, b: int) -> None:
        keys = [np.packbits(self.usable[:, c]).tobytes() for c in range(a, b + 1)]
        base = _mode_index(keys)
        self._regular = {c for c, k in zip(range(a, b + 1), keys) if k == base}
        self._base = self._col(self.usable, a + keys.index(base))
        # the channels interpolation runs over: the run's set, or that set less a few samples
        reg = [c for c in range(a, b + 1) if c in self._regular or self._removable(c)]
        if len(reg) > 2:
            self.node(reg[0])
            self.node(reg[-1])
            self._segment(reg, 0, len(reg) - 1)
            for c in reg:  # nodes with samples of their own masked: removed from the node's solve
                if c in self.nodes and c not in self._regular and not self._own_at_node(c):
                    self.exact(c)
        for c in range(a, b + 1):  # whatever is neither interpolated nor a node: solved exactly
            if c not in self.weights and c not in self.interpolated:
                self.exact(c)
        self.cache.discard_where(lambda k: k[0] == "removal")
        for c in range(a, b + 1):  # the eigendecompositions are not needed any more
            for solves in (self.nodes, self.weights):
                if c in solves:
                    self._factorless.add((c, solves[c]))
                    if ("solve", c, solves[c]) in self.cache:
                        self._solution(c, solves[c])  # drops the factor it holds

    def _removable(self, c: int) -> bool:
        """Channel ``c``'s usable set is the run's less 1..MASK_MAX samples whose positions and
        seeing are finite (so that the run's set can be solved at ``c``)."""
        if not (self.solver.keep_factor and self.solver.config.variant == "code"):
            return False
        use_c, base = self.usable[:, c], self._base
        if np.any(use_c & ~base):
            return False
        drop = base & ~use_c
        k = int(np.count_nonzero(drop))
        if not 1 <= k <= MASK_MAX:
            return False
        x, y, fw = self.x[drop, c], self.y[drop, c], self.fw[drop, c]
        return bool(np.all(np.isfinite(x) & np.isfinite(y) & np.isfinite(fw) & (fw > 0)))

    def _drop(self, c: int, use_idx: np.ndarray) -> np.ndarray:
        """Positions in the run's ``use_idx`` of the samples masked at ``c`` only."""
        return np.flatnonzero(~self.usable[use_idx, c])

    def _variance(self, c: int, W: np.ndarray) -> np.ndarray:
        use_idx = self._use_of[self.nodes[c]]
        return propagated_variance(W, self._inverse(self.iv[use_idx, c], self._drop(c, use_idx)))

    def _w(self, n: int, key: bytes) -> tuple | None:
        """Node ``n``'s weights tuple on the selection ``key``: its own solve where that is its
        selection, else the solve moved to ``key`` by :func:`crrxr.core.pixel_update.change_pixels`
        (None where that does not apply, its quadrature estimate exceeds GRAM_RTOL or its
        condition the interpolation limit)."""
        if key == self.sel_key[n]:
            return self._node(n)
        return self.cache.get(("move", n, key), lambda: self._move(n, key))

    def _move(self, n: int, key: bytes) -> tuple | None:
        node = self._node(n, factor=True)
        if node[6] is None:
            return None
        sel_idx = np.flatnonzero(self._sel[key])
        pos = np.full(self.solver.grid.size, -1, dtype=np.intp)
        pos[node[0]] = np.arange(node[0].size)
        old = pos[sel_idx]
        # kernel columns of the entering pixels only; the others are the node's own
        entering = np.zeros(self.solver.grid.size, dtype=bool)
        entering[sel_idx[old < 0]] = True
        s, p, d, _, dp = self._geometry(n)
        A_in = self.solver.kernel_matrix(
            self._col(self.x, n),
            self._col(self.y, n),
            self._col(self.fw, n),
            self._usable_of[self.nodes[n]],
            (s, p, d, entering, dp),
        )[0]
        A_old = node[6].A
        cols = np.where(old >= 0, old, A_old.shape[1] + np.cumsum(old < 0) - 1)
        A = sparse.hstack([A_old, A_in], format="csr")[:, cols]
        self.n_moves += 1
        moved = change_pixels(node[6], node[2], A, old, self.solver.config.sv_floor)
        if (
            moved is None
            or moved.error > GRAM_RTOL
            or moved.floor_share > FLOOR_SHARE_MAX
            or moved.condition > self.cond_max
        ):
            return None
        self._floor_share[(n, key)] = moved.floor_share
        error = float(node[4] or 0.0) + moved.error + moved.floor_share
        return (sel_idx, node[1], moved.weights, node[3], error, moved.condition, None)

    def _check(self, check_nodes: tuple[int, ...], at: int, key: bytes) -> _Check | None:
        """The interpolant through ``check_nodes`` compared with the solve at ``at`` (a node), all
        on the selection ``key`` (None where a node cannot be moved there)."""
        ws = {n: self._w(n, key) for n in (*check_nodes, at)}
        if any(v is None for v in ws.values()):
            return None
        Wm = ws[at][2]
        coef = _lagrange(check_nodes, np.array([at]))[:, 0]
        D = sum(w * ws[n][2] for w, n in zip(coef, check_nodes)) - Wm
        var_px = _rel(self._variance(at, Wm + D), self._variance(at, Wm))
        cover = np.square(Wm).sum(axis=1)
        cover_rel = float(_rel(np.square(Wm + D).sum(axis=1), cover).max(initial=0.0))
        # the largest over pixels the exact solve at ``at`` keeps: what decides whether a half is
        # worth forming (the bound itself is taken per channel over the pixels it keeps)
        kept = ~_certain_lowcov(self.solver.config.lowcov_threshold, cover[:, None], np.zeros(1))[
            :, 0
        ]
        var_rel = float(var_px[kept].max(initial=0.0))
        return _Check(check_nodes, at, D, var_px, var_rel, cover_rel)

    def _segment(self, reg: list[int], i: int, j: int, outers: tuple[int, ...] = ()) -> None:
        """Interpolate the channels between reg[i] and reg[j] (nodes), refining where the bound
        fails; ``outers``: the other ends of the parent and grandparent segments (as far as they
        exist: none at the top of a run, or where the parent was refused), whose nodes give the
        quadratic's and the cubic's checks."""
        if j - i <= 1:
            return
        m = (i + j) // 2
        ci, cj, cm = reg[i], reg[j], reg[m]
        self.node(cm)
        if any((self._node(c)[5] or 0.0) > self.cond_max for c in (ci, cj, cm)):
            # outside the conditioning where the bound was validated: refine (all exact at last)
            self._segment(reg, i, m)
            self._segment(reg, m, j)
            return
        # checks per selection, formed where a half has channels of that selection; the
        # quadratic's only where a linear half fails
        lin: dict[bytes, _Check | None] = {}
        quad: dict[bytes, _Check | None] = {}
        cubic_checks: dict[bytes, _Check | None] = {}
        outer = [reg[o] for o in outers]

        def check(kind: dict, nodes: tuple[int, ...], key: bytes) -> _Check | None:
            if key not in kind:
                kind[key] = self._check(nodes, cm, key)
            return kind[key]

        def linear(lo: int, hi: int):
            def model(key: bytes) -> _Model | None:
                c = check(lin, (ci, cj), key)
                return None if c is None else c.model((reg[lo], reg[hi]))

            return model

        def quadratic(key: bytes) -> _Model | None:
            c = check(quad, tuple(sorted((ci, cj, outer[0]))), key)
            return None if c is None else c.model((ci, cm, cj))

        def cubic(key: bytes) -> _Model | None:
            c = check(cubic_checks, tuple(sorted((ci, cj, *outer[:2]))), key)
            return None if c is None else c.model(tuple(sorted((ci, cm, cj, outer[0]))))

        # the first half's middle, once solved (that half refined), checks the quadratic through
        # (i, m, j) for the second half: one solve instead of that half's own middle
        q = None
        quad_q: dict[bytes, _Check | None] = {}

        def sibling(key: bytes) -> _Model | None:
            if key not in quad_q:
                quad_q[key] = self._check((ci, cm, cj), reg[q], key)
            c = quad_q[key]
            return None if c is None else c.model((ci, cm, cj))

        for lo, hi, other in ((i, m, j), (m, j, i)):
            if self._half(reg, lo, hi, linear(lo, hi), (cm, ci, cj)):
                continue
            if outer and self._half(reg, lo, hi, quadratic, (cm, ci, cj, outer[0])):
                continue
            if q is not None and self._half(reg, lo, hi, sibling, (reg[q], ci, cm, cj)):
                continue
            if len(outer) > 1 and self._half(reg, lo, hi, cubic, (cm, ci, cj, *outer[:2])):
                continue
            self._segment(reg, lo, hi, (other, *outers[:1]))
            if lo == i and m - i > 1:
                q = (i + m) // 2

    def _half(self, reg: list[int], i: int, j: int, model_for, involved: tuple[int, ...]) -> bool:
        """Interpolate the channels strictly inside reg[i]..reg[j] if all pass their bound
        (``model_for(key)``: the interpolation and its check on selection ``key``, None where it
        cannot be formed; ``involved``: every node it uses, the check's middle first), counting
        for each the pixels whose coverage lies within its bound of the LOWCOV threshold. Channels
        with samples of their own masked are checked on their nodes' removed weights where every
        involved node has their selection (else left to be solved exactly). Selections are tried
        from the middle node's own, so that a failing half is refused before nodes are moved to
        the others."""
        if j - i <= 1:
            return True
        inside = reg[i + 1 : j]
        groups: dict[bytes, list[int]] = {}
        for c in inside:
            if c in self._regular:
                groups.setdefault(self.sel_key[c], []).append(c)
        order = sorted(groups, key=lambda key: key != self.sel_key[involved[0]])
        done = []
        for key in order:
            model = model_for(key)
            if model is None:
                return False
            res = self._group(np.array(groups[key], dtype=np.intp), key, model)
            if res is None:
                return False
            done.append(res)
        masked = {}
        for c in inside:
            if c not in self._regular:
                if any(self.sel_key[n] != self.sel_key[c] for n in involved):
                    continue  # removals need the nodes' own solves on c's selection
                model = model_for(self.sel_key[c])
                res = None if model is None else self._masked(c, model)
                if res is False:
                    return False  # the bound fails on the removed weights: refine
                if res is not None:
                    masked[c] = res
        for model, chans, L, flux, S, cover, bounds, var_bounds, cover_bounds, lsf in done:
            for n, c in enumerate(chans):
                c = int(c)
                if lsf is not None and c in self.outputs:
                    self.lsf_sums[c] = lsf[:, n, :]
                self.interpolated[c] = (
                    model.nodes,
                    tuple(L[:, n]),
                    flux[:, n],
                    S[:, n],
                    cover[:, n],
                )
                self.bound[c] = float(bounds[n])
                self.var_bound[c] = float(var_bounds[n])
                self.borderline[c] = self._borderline(cover[:, n], cover_bounds[n])
        for c, (entry, removed, bound, var_bound, near, lsf) in masked.items():
            self.interpolated[c], self.masked[c] = entry, removed
            self.bound[c], self.var_bound[c], self.borderline[c] = bound, var_bound, near
            if lsf is not None:
                self.lsf_sums[c] = lsf
        return True

    def _group(self, chans: np.ndarray, key: bytes, model: _Model):
        """Flux, variance, coverage and bounds of regular channels ``chans`` of one selection
        interpolated by ``model``; None where a bound fails."""
        ratio = model.ratio(chans)
        safety = model.safety
        if safety * float(ratio.max()) * model.var_rel > IVAR_RTOL:
            return None
        nodes = [self._w(n, key) for n in model.nodes]
        use_idx = nodes[0][1]
        Ws = [node[2] for node in nodes]
        L = _lagrange(model.nodes, chans)  # (nodes, channels)
        F = self.f[np.ix_(use_idx, chans)]
        V = 1.0 / self.iv[np.ix_(use_idx, chans)]
        # diag(W_k N_k W_k^T) and diag(W_k W_k^T) of W_k = sum_n L_nk W_n, pair by pair
        VV = np.hstack([V, np.ones((use_idx.size, 1))])
        S = np.zeros((Ws[0].shape[0], chans.size))
        cover = np.zeros_like(S)
        for a in range(len(Ws)):
            for b in range(a, len(Ws)):
                P = (Ws[a] * Ws[b]) @ VV
                w = (1.0 if a == b else 2.0) * L[a] * L[b]
                S += w * P[:, :-1]
                cover += w * P[:, -1:]
        # pixels LOWCOV in the exact solve too (ivar 0 in both cubes) do not enter the bounds
        cover_bounds = safety * ratio * model.cover_rel
        kept = ~_certain_lowcov(self.solver.config.lowcov_threshold, cover, cover_bounds)
        var_bounds = safety * ratio * np.where(kept, model.var_px[:, None], 0.0).max(axis=0)
        if not np.all(var_bounds <= IVAR_RTOL):
            return None
        err = np.abs(model.D @ F)
        sigma = np.sqrt(np.maximum(S, 0.0))
        safe = np.where(sigma > 0, sigma, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(kept & (sigma > 0), err / safe, 0.0)
        bounds = safety * ratio * (rel.max(axis=0) if rel.size else np.zeros(chans.size))
        # paper-variant nodes moved here differ from exact solves by up to their floor share of W
        # (modes at the singular-value floor): taken as that share of each pixel's flux
        share = sum(
            np.abs(L[a]) * self._floor_share.get((n, key), 0.0) for a, n in enumerate(model.nodes)
        )
        flux = None  # formed after the bounds hold, unless the floor shares need it first
        if np.any(share > 0):
            flux = self._interpolated(L, Ws, F)
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = np.where(kept & (sigma > 0), np.abs(flux) / safe, 0.0)
            bounds = bounds + share * (snr.max(axis=0) if snr.size else 0.0)
            var_bounds = var_bounds + 2.0 * share + share * share
            if not np.all(var_bounds <= IVAR_RTOL):
                return None
        if not np.all(bounds <= self.tolerance):
            return None
        if flux is None:
            flux = self._interpolated(L, Ws, F)
        lsf = None
        if self.lsf2 is not None:
            # (n_sel, channels, k + 1): W sigma^2 for each LSF and W 1
            X = np.concatenate(
                [self.lsf2[np.ix_(use_idx, chans)], np.ones((use_idx.size, chans.size, 1))], axis=2
            )
            shape = (Ws[0].shape[0], *X.shape[1:])
            flat = X.reshape(use_idx.size, -1)
            lsf = sum(L[a][:, None] * (W @ flat).reshape(shape) for a, W in enumerate(Ws))
        return model, chans, L, flux, S, cover, bounds, var_bounds, cover_bounds, lsf

    @staticmethod
    def _interpolated(L: np.ndarray, Ws: list, F: np.ndarray) -> np.ndarray:
        """Flux images (n_sel, channels) of W_k = sum_n L_nk W_n applied to the fluxes F."""
        return sum(L[a] * (W @ F) for a, W in enumerate(Ws))

    def _borderline(self, cover: np.ndarray, cover_bound: float) -> int:
        """Pixels whose coverage (n_sel,) lies within its certified margin of the LOWCOV
        threshold (``cover_bound``: the bound on the coverage's relative error)."""
        if not (cover.size and np.any(cover > 0)):
            return 0
        above, margin = _lowcov_margin(self.solver.config.lowcov_threshold, cover, cover_bound)
        return int(np.count_nonzero(np.abs(above) <= margin))

    def _masked(self, c: int, model: _Model | None):
        """Channel ``c`` (the run's set less a few samples) interpolated by ``model`` from its
        nodes' weights with those samples removed (:mod:`crrxr.core.sample_removal`), under the
        same bound as a regular channel with D measured on the removed weights of the check's
        nodes; ``model`` None: ``c`` is a node itself and its weights are the removal alone,
        bounded by the quadrature's error plus twice the node solve's own error estimate.

        Returns ((nodes, coefficients, flux, var, cover), (drop, removals at the nodes), bound,
        variance bound, borderline pixels, LSF sums or None); False where the bound fails (refine);
        None where removal does not apply (no factor, the quadrature's estimate too large: solve
        ``c`` exactly)."""
        nodes = (c,) if model is None else model.nodes
        checked = () if model is None else (*model.check_nodes, model.check_at)
        involved = tuple(dict.fromkeys(nodes + checked))
        if any(self._node(n, factor=True)[6] is None for n in involved):
            return None
        use_idx = self._use_of[self.nodes[nodes[0]]]
        drop = self._drop(c, use_idx)
        rem = {n: self._removal(n, drop) for n in involved}
        if not all(r.error <= GRAM_RTOL for r in rem.values()):
            return None
        coef = _lagrange(nodes, np.array([c]))[:, 0]
        fc = self.f[use_idx, c].copy()
        fc[drop] = 0.0
        ones = np.ones(use_idx.size)
        ones[drop] = 0.0
        vc = np.column_stack([self._inverse(self.iv[use_idx, c], drop), ones])
        W = {n: self._node(n)[2] for n in involved}
        npix = W[nodes[0]].shape[0]
        own, flux, err = np.zeros((npix, 2)), np.zeros(npix), np.zeros(npix)
        lsf = None
        if self.lsf2 is not None and c in self.outputs:
            X = self._lsf_columns(c, use_idx, drop)
            lsf = np.zeros((npix, X.shape[1]))
        if model is not None:
            cm = model.check_at
            pred = _lagrange(model.check_nodes, np.array([cm]))[:, 0]
            # the variance model at m: without c's removed samples nor those masked at m itself
            drop_m = np.union1d(drop, self._drop(cm, use_idx))
            vm = np.column_stack([self._inverse(self.iv[use_idx, cm], drop_m), ones])
            lin, mid = np.zeros((npix, 2)), np.zeros((npix, 2))
        wmax = 0.0
        # row blocks: the nodes' removed weights are formed a few rows at a time, never whole
        for lo in range(0, npix, ROW_BLOCK):
            hi = min(lo + ROW_BLOCK, npix)
            B = {n: rem[n].rows(W[n], lo, hi) for n in involved}
            Wc = sum(w * B[n] for w, n in zip(coef, nodes))
            flux[lo:hi] = Wc @ fc
            own[lo:hi] = np.square(Wc) @ vc
            if lsf is not None:
                lsf[lo:hi] = Wc @ X
            if model is None:
                wmax = max(wmax, float(np.abs(Wc).max(initial=0.0)))
                continue
            P = sum(w * B[n] for w, n in zip(pred, model.check_nodes))  # W(m) + D
            err[lo:hi] = np.abs(P @ fc - B[cm] @ fc)  # |D f_c|
            lin[lo:hi] = np.square(P) @ vm
            mid[lo:hi] = np.square(B[cm]) @ vm
        ratio, cover_rel, var_bound = 0.0, 0.0, 0.0
        safety = SAFETY if model is None else model.safety
        if model is None:
            # relative to max|W|: the quadrature's error, and the node solve's own (an exact solve
            # of the channel differs from the truth, and so from this, by up to the same again)
            rel_w = rem[c].error + 2 * float(self._node(c)[4] or 0.0)
            err[:] = rel_w * wmax * float(np.abs(fc).sum())
        else:
            ratio = float(model.ratio(np.array([c]))[0])
            cover_rel = float(_rel(lin[:, 1], mid[:, 1]).max(initial=0.0))
        var, cover = own[:, 0], own[:, 1]
        # pixels LOWCOV in the exact solve too (ivar 0 in both cubes) do not enter the bounds
        kept = ~_certain_lowcov(
            self.solver.config.lowcov_threshold,
            cover[:, None],
            np.array([safety * ratio * cover_rel]),
        )[:, 0]
        if model is not None:
            var_bound = safety * ratio * float(_rel(lin[:, 0], mid[:, 0])[kept].max(initial=0.0))
            if var_bound > IVAR_RTOL:
                return False
        sigma = np.sqrt(np.maximum(var, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(kept & (sigma > 0), err / np.where(sigma > 0, sigma, 1.0), 0.0)
        worst = float(rel.max()) if rel.size else 0.0
        bound = safety * (worst if model is None else ratio * worst)
        if not bound <= self.tolerance:
            return False
        entry = (nodes, tuple(float(w) for w in coef), flux, var, cover)
        # the removals are kept for a wanted channel only (weights_of forms its W)
        removed = (drop, tuple(rem[n] for n in nodes) if c in self.want else None)
        near = self._borderline(cover, safety * ratio * cover_rel)
        return entry, removed, bound, var_bound, near, lsf

    def _own_at_node(self, c: int) -> bool:
        """Node ``c``'s own weights: its solve of the run's set less its masked samples."""
        res = self._masked(c, None)
        if not res:
            return False
        entry, self.masked[c], self.bound[c], self.var_bound[c], self.borderline[c], lsf = res
        self.interpolated[c] = entry
        if lsf is not None:
            self.lsf_sums[c] = lsf
        return True

    def _removal(self, node: int, drop: np.ndarray):
        """The node's weights without ``drop`` (cached over the run: a sample masked over several
        channels is removed once per node)."""
        key = ("removal", node, self.nodes[node], drop.tobytes())
        return self.cache.get(key, lambda: remove_samples(self._node(node, factor=True)[6], drop))

    @staticmethod
    def _inverse(iv: np.ndarray, drop: np.ndarray) -> np.ndarray:
        """Sample variances 1 / ivar, 0 for the removed samples (their weights are 0)."""
        iv = iv.astype(float)  # a copy
        iv[drop] = 0.0
        return ivar_from_variance(iv)  # 1/x where x > 0, else 0: the same reciprocal

    def meta(self, c: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(sel_idx, use_idx, route) of interpolated channel ``c``: its selection, the samples its
        weights apply to (its nodes' less those removed) and its first node's solve route."""
        first = self.interpolated[c][0][0]
        use_idx = self._use_of[self.nodes[first]]
        if c in self.masked:
            use_idx = np.delete(use_idx, self.masked[c][0])
        return self.selection(c), use_idx, self.route[first]

    def selection(self, c: int) -> np.ndarray:
        """Flat indices of channel ``c``'s solved pixels."""
        return np.flatnonzero(self._sel[self.sel_key[c]])

    def weights_of(self, c: int) -> tuple:
        """Weights tuple applied to channel ``c`` (W formed here for interpolated ones; the other
        fields are the first node's)."""
        if c in self.weights:
            return self.exact(c)
        nodes, coef = self.interpolated[c][:2]
        if c in self.masked:
            node = self._node(nodes[0])  # (sel_idx, use_idx, W, route, ...) as ChannelSolver's
            drop, rems = self.masked[c]
            W = sum(w * r.rows(self._node(n)[2]) for w, n, r in zip(coef, nodes, rems))
            return (node[0], np.delete(node[1], drop), np.delete(W, drop, axis=1), *node[3:])
        moved = [self._w(n, self.sel_key[c]) for n in nodes]
        W = sum(w * node[2] for w, node in zip(coef, moved))
        return (*moved[0][:2], W, *moved[0][3:])


def _kernel_model(config: CoreConfig) -> tuple:
    """(fiber radius, sigma ratio, wing ratio, wing) of the config's kernel."""
    return config.fiber_radius, config.sigma_ratio, config.wing_ratio, config.wing


def condition_limit(config: CoreConfig, fwhm: np.ndarray) -> float:
    """Largest effective condition number around which W is interpolated for samples of seeing
    ``fwhm`` (arcsec, any shape; non-finite values ignored): :data:`COND_MAX`, lowered to
    :data:`JITTER_MAX` over the kernel's relative value at the truncation radius."""
    fwhm = np.asarray(fwhm, dtype=float)
    fwhm = fwhm[np.isfinite(fwhm) & (fwhm > 0)]
    if not fwhm.size:
        return COND_MAX
    level = cut_level(config.truncation_radius, float(fwhm.max()), *_kernel_model(config))
    return COND_MAX if level <= 0 else min(COND_MAX, JITTER_MAX / level)


def needed_radius(config: CoreConfig, fwhm: float) -> float:
    """The truncation radius (arcsec) at which :func:`condition_limit` reaches :data:`COND_MAX`
    for seeing ``fwhm`` (arcsec): the kernel there is JITTER_MAX / COND_MAX of its peak."""
    return radius_for_level(JITTER_MAX / COND_MAX, fwhm, *_kernel_model(config))


def _images(
    solver: ChannelSolver,
    sel_idx: np.ndarray,
    use_idx: np.ndarray,
    flux: np.ndarray,
    var: np.ndarray,
    cover: np.ndarray,
    deadpix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux, ivar and mask images of an interpolated channel (same units and mask rules as
    :meth:`ChannelSolver.solve`): ``flux`` = W f and ``var`` = diag(W N W^T), ``cover`` =
    diag(W N~ W^T) over the selected pixels, weights units."""
    factor = solver.config.flux_factor
    npix = solver.grid.size
    image, ivar_img, cover_img = np.zeros(npix), np.zeros(npix), np.zeros(npix)
    image[sel_idx] = factor * flux
    ivar_img[sel_idx] = ivar_from_variance(var) / factor**2
    cover_img[sel_idx] = cover
    mask = solver._mask(sel_idx if use_idx.size else sel_idx[:0], cover_img, deadpix)
    ivar_img[(mask & masks.DONOTUSE) != 0] = 0.0  # ivar > 0 means usable (docs/contracts.md)
    shape = solver.grid.shape
    return image.reshape(shape), ivar_img.reshape(shape), mask.reshape(shape)


def _lowcov_margin(
    threshold: float, cover: np.ndarray, cover_bound: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """(above, margin), each like ``cover`` ((n_sel,) or (n_sel, n) channels in columns):
    how far each pixel's coverage lies above the LOWCOV edge (``threshold`` x its channel's median
    nonzero coverage), and how far it may move given ``cover_bound`` (per channel), the bound on
    the coverage's relative error (the coverage and its median each move by up to that)."""
    with np.errstate(invalid="ignore"):
        edge = threshold * np.nanmedian(np.where(cover > 0, cover, np.nan), axis=0)
    return cover - edge, (2 * np.asarray(cover_bound) + 1e-12) * (cover + edge)


def _certain_lowcov(threshold: float, cover: np.ndarray, cover_bound: np.ndarray) -> np.ndarray:
    """(n_sel, n) bool: pixels LOWCOV in the exact solve as well, from each channel's coverage
    ``cover`` (n_sel, n) and the bound (n,) on its relative error (:func:`_lowcov_margin`): their
    ivar is 0 in both cubes, so they do not enter the bounds."""
    if not cover.size:
        return np.zeros(cover.shape, dtype=bool)
    above, margin = _lowcov_margin(threshold, cover, cover_bound)
    with np.errstate(invalid="ignore"):
        return above > margin


def _rel(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|approx / exact - 1| where exact > 0, else 0."""
    ok = exact > 0
    return np.where(ok, np.abs(approx / np.where(ok, exact, 1.0) - 1.0), 0.0)


def reconstruct_block_reuse(
    xpos: np.ndarray,
    ypos: np.ndarray,
    fwhm: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    grid: Grid,
    config: CoreConfig,
    *,
    first: int,
    out: tuple[int, int],
    n_chan: int,
    tolerance: float,
    correlation_pairs: tuple[np.ndarray, np.ndarray] | None = None,
    want: Iterable[int] = (),
    block: int = BLOCK,
    lsf: Mapping[str, np.ndarray] | None = None,
    cache_bytes: int = CACHE_BYTES,
) -> ReuseResult:
    """Reconstruct global channels ``out = (start, stop)`` of a cube of ``n_chan`` channels from
    inputs covering global channels ``first .. first + n - 1``, exactly :func:`read_range`'s
    ``(lo, hi)`` for ``out``, reusing weights.

    Inputs as :func:`crrxr.core.reconstruct_block` ((n_samples, n) arrays; fwhm in arcsec).
    ``tolerance``: bound on |flux - exact flux| in units of each pixel's noise sigma (> 0).
    ``want``: output offsets (relative to ``start``) whose correlation and PSF are returned.
    ``lsf``: sample LSF dispersions {name: (n_samples, n) Angstrom}, each pushed through the
    weights applied to each channel (:func:`crrxr.core.lsf.combine_lsf`; for an interpolated
    channel without forming its W). ``cache_bytes``: most bytes a block keeps of exact solves,
    their eigendecompositions, moved weights and sample removals (:class:`BoundedCache`; what it
    drops is recomputed with the same bits, so this sets the time and memory, never the result).
    """
    if config.method != "crr":
        raise InputError("weight reuse applies to method 'crr' only")
    if not tolerance > 0:
        raise InputError(f"reuse tolerance must be > 0 (0 means exact solves), got {tolerance}")
    start, stop = out
    arrays = validate_samples(xpos, ypos, fwhm, flux, ivar, mask, config, ndim=2)
    n = arrays[0].shape[1]
    if (first, first + n) != read_range(start, stop, n_chan, block):
        raise InputError(
            f"inputs cover channels {first}:{first + n}, but outputs {start}:{stop} of {n_chan} "
            f"need exactly {read_range(start, stop, n_chan, block)} (crrxr.core.reuse.read_range)"
        )
    n_out = stop - start
    want_set = {int(w) for w in want}
    for w in want_set:
        if not 0 <= w < n_out:
            raise InputError(f"want offset {w} is outside the output channels 0..{n_out - 1}")
    ny, nx = grid.shape
    out_flux = np.zeros((n_out, ny, nx))
    out_ivar = np.zeros((n_out, ny, nx))
    out_mask = np.zeros((n_out, ny, nx), dtype=np.uint32)
    failed = np.zeros(n_out, dtype=bool)
    messages = [""] * n_out
    solvers = ["none"] * n_out
    exact = np.zeros(n_out, dtype=bool)
    bound = np.zeros(n_out)
    var_bound = np.zeros(n_out)
    borderline = np.zeros(n_out, dtype=np.int64)
    n_nodes = np.zeros(n_out, dtype=np.int64)
    rho: dict[int, np.ndarray] = {}
    psf: dict[int, np.ndarray] = {}
    n_solves = n_moves = peak_cache = 0
    x, y, fw, f, iv, usable, dead = arrays
    lsf_in = {name: squared_lsf(name, s, usable) for name, s in (lsf or {}).items()}
    out_lsf = {name: np.full((n_out, ny, nx), np.nan) for name in lsf_in}
    lsf2 = np.stack([np.square(v) for v in lsf_in.values()], axis=2) if lsf_in else None
    last = first + n - 1
    carry: dict[int, tuple] = {}  # the last block's closing solve, this block's first channel
    for k in range(start // block, (stop - 1) // block + 1):
        lo, hi = k * block, min((k + 1) * block, last)
        own = range(max(lo, start), min(lo + block, stop))  # output channels this block owns
        plan = _BlockPlan(
            arrays,
            grid,
            config,
            tolerance,
            carried=carry,
            cache_bytes=cache_bytes,
            outputs=[c - first for c in own],
            want=[w + start - first for w in want_set if w + start in own],
            lsf2=lsf2,
        )
        carry = {}
        try:
            plan.run(lo - first, hi - first)
        except InputError:
            raise
        except Exception:  # noqa: BLE001 - the block falls back to exact per-channel solves
            sl = slice(own.start - first, own.stop - first)
            res = reconstruct_block(
                x[:, sl],
                y[:, sl],
                fw[:, sl],
                f[:, sl],
                iv[:, sl],
                np.asarray(mask)[:, sl],
                grid,
                config,
                correlation_pairs=correlation_pairs,
                want=[w + start - own.start for w in want_set if own.start <= w + start < own.stop],
                lsf={name: s[:, sl] for name, s in lsf_in.items()},
            )
            o = slice(own.start - start, own.stop - start)
            out_flux[o], out_ivar[o], out_mask[o] = res.flux, res.ivar, res.mask
            failed[o], exact[o] = res.failed, True
            messages[o] = list(res.messages)
            solvers[o] = list(res.solver)
            for w, v in res.rho.items():
                rho[w + own.start - start] = v
            for w, v in res.psf.items():
                psf[w + own.start - start] = v
            for name, v in res.lsf.items():
                out_lsf[name][o] = v
            n_solves += len(own)
            continue
        carry = plan.closing
        applier = plan.solver
        for c in own:
            o, a = c - start, c - first
            wanted = o in want_set
            exact[o] = a in plan.weights
            bound[o] = plan.bound[a]
            var_bound[o] = plan.var_bound.get(a, 0.0)
            borderline[o] = plan.borderline.get(a, 0)
            n_nodes[o] = len(plan.interpolated[a][0]) if a in plan.interpolated else 0
            if lsf_in:  # W sigma^2 and W 1 of the weights applied, summed by the plan
                sums, sel_idx = plan.lsf_sums[a], plan.selection(a)
                for i, name in enumerate(lsf_in):
                    out_lsf[name][o].flat[sel_idx] = lsf_from_sums(sums[:, i], sums[:, -1])
            if a in plan.images:  # exact, formed when solved
                out_flux[o], out_ivar[o], out_mask[o], solvers[o] = plan.images[a]
                continue
            if a in plan.interpolated and not wanted:
                fl, var, cover = plan.interpolated[a][2:]
                sel_idx, use_idx, route = plan.meta(a)
                out_flux[o], out_ivar[o], out_mask[o] = _images(
                    applier, sel_idx, use_idx, fl, var, cover, plan.deadpix[a]
                )
                solvers[o] = f"{route}+reuse"
                continue
            applier.injected = plan.weights_of(a)
            res = applier.solve(
                np.ascontiguousarray(x[:, a]),
                np.ascontiguousarray(y[:, a]),
                np.ascontiguousarray(fw[:, a]),
                f[:, a],
                iv[:, a],
                usable[:, a],
                dead[:, a],
                pairs=correlation_pairs if wanted and correlation_pairs is not None else None,
                psf=wanted,
            )
            out_flux[o], out_ivar[o], out_mask[o] = res.flux, res.ivar, res.mask
            solvers[o] = res.solver if exact[o] else f"{res.solver}+reuse"
            if wanted:
                if res.rho is not None:
                    rho[o] = res.rho
                if res.psf is not None:
                    psf[o] = res.psf
        applier.injected = None
        # solves counted last: weights formed for wanted channels may have solved again
        n_solves += plan.n_solves
        n_moves += plan.n_moves
        peak_cache = max(peak_cache, plan.cache.peak)
    for o in np.flatnonzero(failed):
        out_mask[o] = masks.NOCOV | masks.DONOTUSE
    res = BlockResult(
        out_flux, out_ivar, out_mask, failed, tuple(messages), rho, psf, tuple(solvers), out_lsf
    )
    return ReuseResult(
        res, exact, bound, borderline, n_nodes, n_solves, n_moves, peak_cache, var_bound=var_bound
    )
