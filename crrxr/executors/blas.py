"""BLAS threads of the workers: fixed, and set once per worker process (never per task).

A cube must be a pure function of (RSS, parameters), and OpenBLAS gives different bits with 1 and 2
threads (eigh/SVD/products split their work differently), so every worker runs BLAS with
:data:`BLAS_THREADS` threads whatever the worker count: parallelism comes from workers. The setting is
process-wide, so it is made where a worker process or thread pool starts, never inside tasks that may
overlap in one process (a ``threadpool_limits`` context per task restores the others' value while they
still run).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from threadpoolctl import threadpool_limits

#: BLAS threads per worker (process or thread); part of what makes builds bitwise reproducible
BLAS_THREADS = 1
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _load_blas() -> None:
    """Load numpy's and scipy's BLAS (each wheel ships its own): threadpoolctl reaches loaded ones only."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401


def set_worker_blas_threads() -> None:
    """Set this process's BLAS pools to :data:`BLAS_THREADS`, for good (a worker initializer); the
    environment too, for BLAS libraries loaded later."""
    for name in _ENV:
        os.environ[name] = str(BLAS_THREADS)
    _load_blas()
    threadpool_limits(limits=BLAS_THREADS)


def blas_threads_for_pool() -> AbstractContextManager:
    """Context for the lifetime of an in-process pool (synchronous, threads): BLAS at
    :data:`BLAS_THREADS` while the pool runs, the caller's setting back after it has finished."""
    _load_blas()
    return threadpool_limits(limits=BLAS_THREADS)


def blas_worker_plugin():
    """A Dask distributed ``WorkerPlugin`` that calls :func:`set_worker_blas_threads` when a worker
    starts (also on workers that join or restart later); distributed is imported only here."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class BlasThreads(WorkerPlugin):
        name = "crrxr-blas-threads"
        idempotent = True

        def setup(self, worker) -> None:
            set_worker_blas_threads()

    return BlasThreads()
