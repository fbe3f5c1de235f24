"""Ray: the chunk tasks as Ray tasks through dask-on-ray (``ray.util.dask.ray_dask_get``).

``address`` (or ``RAY_ADDRESS``) joins an existing Ray cluster, which is left running. Otherwise a
local Ray is started for the run: ``workers`` CPUs, no dashboard, every address on 127.0.0.1, its
temp and session folders in a private folder removed on close.

Token authentication (Ray >= 2.59 turns it on for new local clusters and writes the token to
``~/.ray/auth_token``): the local Ray keeps token authentication ON, with a random token made for
the run and handed to Ray's processes in ``RAY_AUTH_TOKEN`` (environment only: no file anywhere,
nothing in the home folder). Joining a cluster uses whatever the caller's environment says
(``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``), as for any Ray client.

Each task returns a small :class:`~crrxr.engine.chunk.ChunkResult` (the cube goes straight into the
Zarr store); the driver holds one ObjectRef per chunk (dask-on-ray's ``ray_persist``) and collects
them with ``ray.wait`` as they finish, which drives the progress lines and the ``stop`` event (a
signalled build cancels what has not finished). Ray is told each task's memory (``task_memory``, bytes, from the plan) so a node never
runs more tasks than fit. A task whose worker process dies is retried by Ray (``max_retries``); past
that the build stops with :class:`~crrxr.executors.errors.WorkerLostError` and ``--resume`` finishes it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import dask

from crrxr.executors.base import Executor, Interrupted, ProgressLog
from crrxr.executors.errors import WorkerLostError

log = logging.getLogger(__name__)

#: every Ray worker process runs crrxr's worker start-up (die with its parent, the start hooks)
_RUNTIME_ENV = {"worker_process_setup_hook": "crrxr.executors.base.worker_start"}

#: Ray retries a task whose worker process died this many times before the build stops.
DEFAULT_MAX_RETRIES = 3


def _set_env(stack: ExitStack, name: str, value: str) -> None:
    """Set an environment variable until ``stack`` closes (then the old value comes back)."""
    old = os.environ.get(name)
    os.environ[name] = value
    stack.callback(_restore_env, name, old)


def _restore_env(name: str, old: str | None) -> None:
    if old is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = old


_TOKEN: list[str] = []


def _is_loopback(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``ray://host:port``) names a loopback host."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keep_ray_on_loopback(undo: ExitStack) -> None:
    """Make a local Ray's node IP 127.0.0.1, so that its GCS, raylet, workers and agents listen on
    the loopback interface only (undone on close).

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough: Ray (2.60) maps a loopback node
    address to the machine's own IP unless ``ray_constants.ENABLE_RAY_CLUSTER`` is off (its setting
    for a single-machine Ray, read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when Ray is imported);
    then every server binds to the machine's IP or to all interfaces. A driver joining a head on
    127.0.0.1 needs the same switch, or it registers under the machine's IP and its tasks never run.
    tests/test_ray.py checks every listening socket of the local Ray, so a Ray that changes this is
    caught.
    """
    from ray._private import ray_constants

    undo.callback(setattr, ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    ray_constants.ENABLE_RAY_CLUSTER = False
    _set_env(undo, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's own processes, likewise


def _process_token() -> str:
    """A random Ray auth token made once per process (Ray's token loader keeps the first it sees)."""
    if not _TOKEN:
        _TOKEN.append(secrets.token_hex(32))
    return _TOKEN[0]


class RayExecutor(Executor):
    """Run the chunk tasks on Ray (a local Ray for the run, or an existing cluster by address)."""

    name = "ray"

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        task_memory: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ):
        super().__init__(workers)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.task_memory = int(task_memory) if task_memory else None
        self.max_retries = int(max_retries)
        self._undo = ExitStack()
        self._owns_ray = False  # whether this executor called ray.init (then it shuts Ray down)
        self.temp_dir: str | None = None

    def _start(self) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - the extra is installed in tests
            raise ImportError(
                "--scheduler ray needs Ray: pip install 'crrxr[ray]' (ray and pyarrow)"
            ) from exc
        if ray.is_initialized():  # the caller's Ray session: use it, leave it running
            return
        try:
            if self.address:
                if _is_loopback(self.address):  # a head on this machine's loopback (see below)
                    _keep_ray_on_loopback(self._undo)
                ray.init(
                    address=self.address,
                    runtime_env=_RUNTIME_ENV,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                self._start_local(ray)
            self._owns_ray = True
        except BaseException:
            self._close()
            raise

    def _start_local(self, ray) -> None:
        # short path: Ray puts unix sockets in it (107-byte limit)
        self.temp_dir = tempfile.mkdtemp(prefix="crrxr-ray-")
        self._undo.callback(shutil.rmtree, self.temp_dir, ignore_errors=True)
        # token auth on (Ray's own default for a new local cluster, RAY_AUTH_MODE unset), with a
        # token that lives only in this process's environment (see the module doc)
        if "RAY_AUTH_MODE" in os.environ:
            self._undo.callback(_restore_env, "RAY_AUTH_MODE", os.environ.pop("RAY_AUTH_MODE"))
        else:  # ray.init sets it to "token" for this process: take that back on close
            self._undo.callback(_restore_env, "RAY_AUTH_MODE", None)
        if not os.environ.get("RAY_AUTH_TOKEN"):
            _set_env(self._undo, "RAY_AUTH_TOKEN", _process_token())
        # dask-on-ray reads RAY_ADDRESS too: make sure the new Ray is the one used
        if "RAY_ADDRESS" in os.environ:
            self._undo.callback(_restore_env, "RAY_ADDRESS", os.environ.pop("RAY_ADDRESS"))
        # Ray logs a warning that token auth is on (and how to turn it off): that is our choice here
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        self._undo.callback(auth_log.setLevel, auth_log.level)
        auth_log.setLevel(logging.ERROR)
        _keep_ray_on_loopback(self._undo)
        ray.init(
            num_cpus=self.workers,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=self.temp_dir,
            runtime_env=_RUNTIME_ENV,
            log_to_driver=False,
            configure_logging=False,
        )

    def _close(self) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
        self._undo.close()  # environment, then the temp folder

    def compute(
        self,
        tasks: Sequence[Any],
        *,
        progress: str = "off",
        on_result: Callable[[Any], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[Any]:
        """Submit every chunk through dask-on-ray (``ray_persist``: the driver gets one ObjectRef
        per chunk), then collect them as they finish (``ray.wait``), advancing the progress log.
        Once ``stop`` is set the unfinished tasks are cancelled (a running one is interrupted before
        its ledger mark, so it is simply redone by ``--resume``) and :class:`Interrupted` raised."""
        import ray
        from ray.util.dask import ray_dask_get

        if not ray.is_initialized():
            raise RuntimeError("RayExecutor.compute before start() / its `with` block")
        if not tasks:
            return []
        remote_args: dict[str, Any] = {"max_retries": self.max_retries}
        if self.task_memory:
            remote_args["memory"] = self.task_memory
        refs = dask.compute(
            *tasks, scheduler=ray_dask_get, ray_remote_args=remote_args, ray_persist=True
        )
        position = {ref: i for i, ref in enumerate(refs)}
        plog = ProgressLog(len(refs)) if progress in ("bar", "log") else None
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            if stop is not None and stop.is_set():
                for ref in pending:
                    ray.cancel(ref)
                raise Interrupted()
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                try:
                    result = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
                    for other in pending:
                        ray.cancel(other)
                    raise WorkerLostError(
                        f"a Ray worker died while solving a chunk ({type(exc).__name__}) and "
                        f"Ray's {self.max_retries} retries are used up; the chunks already "
                        "written are kept: rerun with --resume to finish the cube"
                    ) from exc
                results[position[ref]] = result
                if plog is not None:
                    plog.advance()
                if on_result is not None:
                    on_result(result)
        return results

    def describe(self) -> str:
        where = self.address or "local Ray on 127.0.0.1"
        return f"ray ({self.workers} CPU{'s' if self.workers != 1 else ''}, {where})"
