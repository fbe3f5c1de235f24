"""crrxr.core: pure numpy/scipy numerics (kernel, grid, Shepard and CRR weights, covariance, masks).

Entry points for the engine: :func:`reconstruct_slice` (one channel) and :func:`reconstruct_block`
(consecutive channels, reusing kernel tables, neighbour lists and weights).
"""

from crrxr.core.block import BlockResult, reconstruct_block
from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.slice import InputError, SliceResult, reconstruct_slice

__all__ = [
    "BlockResult",
    "CoreConfig",
    "Grid",
    "InputError",
    "SliceResult",
    "reconstruct_block",
    "reconstruct_slice",
]
