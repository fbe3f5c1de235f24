"""A cache of values that can be recomputed, bounded in bytes (least recently used dropped first).

Weight reuse (:mod:`crrxr.core.reuse`) keeps exact solves, their eigendecompositions and weights
moved to other pixel selections while a block is planned: tens of matrices of ~10-100 MB each. Each
is a pure function of the block's inputs, so a value dropped here is recomputed by its loader with
the same bits when asked for again: the bound changes the time a block takes, never its result.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from scipy import sparse


def nbytes(value: Any) -> int:
    """Bytes held by numpy arrays and scipy sparse matrices in ``value`` (through tuples, lists and
    dataclass-like objects' attributes; other objects count 0)."""
    if value is None:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if sparse.issparse(value):
        return sum(int(getattr(value, a).nbytes) for a in ("data", "indices", "indptr"))
    if isinstance(value, tuple | list):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dict__") or hasattr(value, "__dataclass_fields__"):
        fields = getattr(value, "__dataclass_fields__", None) or vars(value)
        return sum(nbytes(getattr(value, f)) for f in fields)
    return 0


class BoundedCache:
    """Values by key, at most ``capacity`` bytes of them kept (:func:`nbytes`); the value just
    asked for is always kept, even alone over the capacity.

    ``loads`` counts values computed (first time or again after being dropped); ``peak`` is the
    largest number of bytes held."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0 bytes, got {capacity}")
        self.capacity = int(capacity)
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.held = 0
        self.peak = 0
        self.loads = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The value of ``key``, computed by ``load()`` when not held."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key][0]
        value = load()
        self.loads += 1
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        """Hold ``value`` under ``key`` (replacing any), then drop the least recently used others
        while over capacity."""
        self.discard(key)
        size = nbytes(value)
        self._values[key] = (value, size)
        self.held += size
        self.peak = max(self.peak, self.held)
        while self.held > self.capacity and len(self._values) > 1:
            _, (_, dropped) = self._values.popitem(last=False)
            self.held -= dropped

    def discard(self, key: Hashable) -> None:
        if key in self._values:
            self.held -= self._values.pop(key)[1]

    def discard_where(self, test: Callable[[Hashable], bool]) -> None:
        for key in [k for k in self._values if test(k)]:
            self.discard(key)
