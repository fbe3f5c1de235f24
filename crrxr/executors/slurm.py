"""SLURM: Dask workers in SLURM jobs (dask-jobqueue ``SLURMCluster``), sized from the build plan.

Site settings (:class:`SlurmSettings`) come from a YAML profile (``--slurm-profile site.yaml``) and/or
flags; the same settings give the ``#SBATCH`` lines of ``crrxr submit``. Each worker job asks for
``memory`` (``--mem``) and its Dask worker(s) get a memory limit of :data:`WORKER_MEMORY_FRACTION` of
it, so Dask pauses/restarts a worker before SLURM kills the job. With a ``walltime`` the workers get
``--lifetime`` (with ``--lifetime-stagger``) so they retire before the limit and the cluster submits
replacements (``adapt`` keeps the job count).

dask-jobqueue only logs a failed ``sbatch``; here the job script is first checked with
``sbatch --test-only`` and the submission watched, so a refused job (bad partition, account,
memory...) raises :class:`~crrxr.executors.errors.ClusterStartError` with sbatch's own message
within seconds instead of a build that waits forever.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, fields, replace
from typing import Any

import yaml

from crrxr.executors.distributed import DistributedExecutor
from crrxr.executors.errors import ClusterStartError

log = logging.getLogger(__name__)

#: A worker's Dask memory limit as a fraction of its share of the job's ``--mem``.
WORKER_MEMORY_FRACTION = 0.85
#: Smallest job memory sized from the plan (bytes): interpreter, Dask worker and one task.
MIN_JOB_MEMORY = 1 * 2**30
#: Seconds to wait for ``sbatch`` to hand out job ids before the start counts as failed.
SUBMIT_TIMEOUT = 30.0


def parse_walltime(value: str) -> int:
    """Seconds from a SLURM time limit: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM[:SS]``."""
    text = str(value).strip()
    try:
        days = 0
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
            parts = [int(p) for p in text.split(":")]
            parts += [0] * (3 - len(parts))  # D-HH, D-HH:MM, D-HH:MM:SS
            h, m, s = parts
        else:
            parts = [int(p) for p in text.split(":")]
            if len(parts) == 1:
                h, m, s = 0, parts[0], 0
            elif len(parts) == 2:
                h, (m, s) = 0, parts
            elif len(parts) == 3:
                h, m, s = parts
            else:
                raise ValueError(text)
    except ValueError as exc:
        raise ValueError(
            f"cannot read the SLURM time limit {value!r}; use HH:MM:SS, MM, or D-HH:MM:SS"
        ) from exc
    total = ((days * 24 + h) * 60 + m) * 60 + s
    if total <= 0:
        raise ValueError(f"the SLURM time limit {value!r} must be positive")
    return total


def retire_margin(total: int) -> int:
    """Seconds before a time limit of ``total`` seconds at which work should wind down: 10% of it,
    at least 1 min, at most 10 min, never more than half of the limit."""
    return min(max(60, total // 10), 600, total // 2)


def lifetime_args(walltime: str) -> list[str]:
    """Dask worker ``--lifetime``/``--lifetime-stagger`` that retire a worker :func:`retire_margin`
    before ``walltime``, with a stagger of half the margin so the workers do not all leave at once."""
    total = parse_walltime(walltime)
    margin = retire_margin(total)
    stagger = max(1, margin // 2)
    return ["--lifetime", f"{total - margin}s", "--lifetime-stagger", f"{stagger}s"]


@dataclass(frozen=True)
class SlurmSettings:
    """A site's SLURM settings; every field may come from a YAML profile or a flag.

    ``memory`` is the job's ``--mem`` (e.g. ``"4GB"``; None: sized from the plan), ``cores`` its
    ``--cpus-per-task``, ``processes`` the Dask workers per job, ``walltime`` its ``--time``.
    ``job_directives`` are extra ``#SBATCH`` options (``"--qos=normal"``), ``env_setup`` shell lines
    run before the worker/build starts (``"module load python"``), ``interface`` the network
    interface workers and scheduler talk on (``ib0``; ``lo`` on a single node), ``local_directory``
    the workers' scratch folder, ``log_directory`` where job stdout/stderr go.
    """

    partition: str | None = None
    account: str | None = None
    walltime: str | None = None
    cores: int = 1
    processes: int = 1
    memory: str | None = None
    interface: str | None = None
    job_directives: tuple[str, ...] = ()
    local_directory: str | None = None
    log_directory: str | None = None
    env_setup: tuple[str, ...] = ()
    python: str | None = None  # the workers' Python (default: this one)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "settings") -> SlurmSettings:
        """Settings from a mapping (YAML keys may use ``-`` or ``_``); unknown keys are refused."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of SLURM settings ({cls.keys()})")
        clean: dict[str, Any] = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name == "queue":
                name = "partition"
            if name not in cls.keys():
                raise ValueError(
                    f"{source}: unknown SLURM setting {key!r}; known: {', '.join(cls.keys())}"
                )
            if value is None:
                continue
            if name in ("job_directives", "env_setup"):
                value = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
            elif name in ("cores", "processes"):
                value = int(value)
                if value < 1:
                    raise ValueError(f"{source}: {key} must be >= 1, got {value}")
            else:
                value = str(value)
            clean[name] = value
        out = cls(**clean)
        if out.walltime:
            parse_walltime(out.walltime)  # refuse an unreadable limit now, not in sbatch
        return out

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> SlurmSettings:
        """Settings from a site profile YAML (top level, or under a ``slurm:`` key)."""
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"SLURM profile {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"SLURM profile {path} is not valid YAML: {exc}") from None
        if isinstance(data, dict) and set(data) == {"slurm"}:
            data = data["slurm"]
        return cls.from_mapping(data, os.fspath(path))

    def updated(self, **values: Any) -> SlurmSettings:
        """A copy with the given ``values`` (flags on the command line) applied; None/empty skipped."""
        given = {k: v for k, v in values.items() if v not in (None, (), [])}
        parsed = SlurmSettings.from_mapping(given, "flags")
        return replace(
            self, **{k.replace("-", "_"): getattr(parsed, k.replace("-", "_")) for k in given}
        )

    def sbatch_directives(self) -> list[str]:
        """The ``#SBATCH`` options these settings fix (partition, account, time, cpus, memory, extra)."""
        out = []
        if self.partition:
            out.append(f"--partition={self.partition}")
        if self.account:
            out.append(f"--account={self.account}")
        if self.walltime:
            out.append(f"--time={self.walltime}")
        out.append(f"--cpus-per-task={self.cores}")
        if self.memory:
            out.append(f"--mem={slurm_memory(self.memory)}")
        out += list(self.job_directives)
        return out


def slurm_memory(value: str | int) -> str:
    """A size for ``--mem`` in whole MiB (``4GB`` -> ``3815M``)."""
    from dask.utils import parse_bytes

    n = int(value) if isinstance(value, int) else int(parse_bytes(str(value)))
    return f"{max(1, n // 2**20)}M"


def size_jobs(
    settings: SlurmSettings, workers: int, worker_memory: int | None
) -> tuple[int, int, int]:
    """(number of jobs, job ``--mem`` bytes, Dask memory limit per worker in bytes).

    ``workers``: Dask workers wanted (one task each at a time); ``worker_memory``: what one worker
    needs (the plan's per-worker budget), used when the settings give no job memory.
    """
    n_jobs = max(1, math.ceil(workers / settings.processes))
    job_mem = job_memory(settings, settings.processes, worker_memory)
    worker_limit = int(job_mem * WORKER_MEMORY_FRACTION / settings.processes)
    return n_jobs, job_mem, worker_limit


def job_memory(settings: SlurmSettings, workers_per_job: int, worker_memory: int | None) -> int:
    """A job's ``--mem`` in bytes: the settings' ``memory``, else what ``workers_per_job`` workers of
    ``worker_memory`` bytes each need with the Dask limit at :data:`WORKER_MEMORY_FRACTION`."""
    from dask.utils import parse_bytes

    if settings.memory:
        return int(parse_bytes(str(settings.memory)))
    need = (worker_memory or MIN_JOB_MEMORY) * workers_per_job
    return max(MIN_JOB_MEMORY, math.ceil(need / WORKER_MEMORY_FRACTION))


class _SubmitErrors(logging.Handler):
    """Collects the ``sbatch`` failures dask-jobqueue only logs (from its event loop)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        text = str(exc) if exc is not None else record.getMessage()
        if "sbatch" in text or "Command exited" in text:
            self.messages.append(_sbatch_message(text))


def _sbatch_message(text: str) -> str:
    """sbatch's own ``error:`` lines out of dask-jobqueue's RuntimeError text."""
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower() and "sbatch" in ln]
    return "; ".join(lines) or text.strip()


def check_job_script(script: str) -> None:
    """Ask ``sbatch --test-only`` whether SLURM would accept ``script``; raise
    :class:`ClusterStartError` with sbatch's message if not (no job is submitted)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="crrxr-check-", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        try:
            proc = subprocess.run(
                ["sbatch", "--test-only", path], capture_output=True, text=True, timeout=60
            )
        except FileNotFoundError:
            raise ClusterStartError(
                "--scheduler slurm needs SLURM's sbatch on PATH (run on a SLURM login node)"
            ) from None
        except subprocess.TimeoutExpired:
            raise ClusterStartError(
                "sbatch --test-only did not answer within 60 s; is slurmctld reachable?"
            ) from None
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise ClusterStartError(
            f"SLURM refused the worker job: {_sbatch_message(proc.stderr) or proc.stderr.strip()}; "
            "fix the SLURM settings (partition, account, walltime, memory, job directives)"
        )


class SlurmExecutor(DistributedExecutor):
    """Dask workers in SLURM jobs started for the run (dask-jobqueue), cancelled on close."""

    name = "slurm"

    def __init__(
        self,
        workers: int = 1,
        memory_limit: int | None = None,
        settings: SlurmSettings | None = None,
    ):
        super().__init__(workers, memory_limit=memory_limit)
        self.settings = settings or SlurmSettings()
        self.n_jobs, self.job_memory, self.worker_memory = size_jobs(
            self.settings, self.workers, memory_limit
        )
        self._owned_logs: str | None = None

    def cluster_kwargs(self) -> dict[str, Any]:
        """Arguments of ``SLURMCluster`` for these settings and this plan."""
        s = self.settings
        extra_args = lifetime_args(s.walltime) if s.walltime else []
        kw: dict[str, Any] = dict(
            cores=s.cores,
            processes=s.processes,
            memory=f"{self.worker_memory * s.processes}B",
            job_mem=slurm_memory(self.job_memory),
            queue=s.partition,
            account=s.account,
            walltime=s.walltime or "01:00:00",
            interface=s.interface,
            job_extra_directives=list(s.job_directives),
            job_script_prologue=list(s.env_setup),
            worker_extra_args=extra_args,
            local_directory=s.local_directory or self._scratch,
            log_directory=s.log_directory or self._owned_logs,
            job_name="crrxr-worker",
            # the scheduler's HTTP endpoint (health, dashboard) only on this host, any free port
            scheduler_options={"dashboard_address": "127.0.0.1:0"},
        )
        if s.interface == "lo":  # a single node: the scheduler listens on 127.0.0.1 only
            kw["scheduler_options"]["host"] = "127.0.0.1"
        if s.python:
            kw["python"] = s.python
        return {k: v for k, v in kw.items() if v is not None}

    def _start(self) -> None:
        import dask
        from dask_jobqueue import SLURMCluster
        from distributed import Client

        from crrxr.executors.worker_plugin import WorkerStart

        try:
            self._scratch = tempfile.mkdtemp(prefix="crrxr-slurm-")
            self._undo.callback(shutil.rmtree, self._scratch, ignore_errors=True)
            self._undo.enter_context(dask.config.set({"temporary-directory": self._scratch}))
            if not self.settings.log_directory:
                self._owned_logs = os.path.join(os.getcwd(), "crrxr-slurm-logs")
            dlog = logging.getLogger("distributed")
            self._undo.callback(dlog.setLevel, dlog.level)
            dlog.setLevel(max(dlog.getEffectiveLevel(), logging.WARNING))
            self.cluster = SLURMCluster(**self.cluster_kwargs())
            check_job_script(self.cluster.job_script())
            self._scale_and_watch()
            self.client = Client(self.cluster)
            self.client.register_plugin(WorkerStart(), name="crrxr-worker-start")
        except BaseException:
            self._close()
            raise

    def _scale_and_watch(self) -> None:
        """Submit the worker jobs and wait until sbatch has given each a job id (or failed)."""
        errors = _SubmitErrors()
        watched = [logging.getLogger(n) for n in ("tornado.application", "distributed.deploy.spec")]
        for lg in watched:
            lg.addHandler(errors)
        old_prop = [lg.propagate for lg in watched]
        try:
            for lg in watched:
                lg.propagate = False  # our message replaces the event loop's traceback
            if self.settings.walltime:  # retired workers are replaced by new jobs
                self.cluster.adapt(minimum_jobs=self.n_jobs, maximum_jobs=self.n_jobs)
            else:
                self.cluster.scale(jobs=self.n_jobs)
            deadline = time.monotonic() + SUBMIT_TIMEOUT
            while time.monotonic() < deadline:
                if errors.messages:
                    raise ClusterStartError(
                        f"sbatch refused the worker job: {errors.messages[0]}; fix the SLURM "
                        "settings (partition, account, walltime, memory, job directives)"
                    )
                jobs = list(self.cluster.workers.values())
                if len(jobs) >= self.n_jobs and all(getattr(j, "job_id", None) for j in jobs):
                    return
                time.sleep(0.1)
            raise ClusterStartError(
                f"sbatch did not submit the {self.n_jobs} worker job(s) within "
                f"{SUBMIT_TIMEOUT:.0f} s; is slurmctld reachable (sinfo)?"
            )
        finally:
            for lg, prop in zip(watched, old_prop):
                lg.removeHandler(errors)
                lg.propagate = prop

    def _close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            try:
                self.cluster.close()
            except AssertionError:  # a job sbatch never accepted: nothing to cancel
                pass
            self.cluster = None
        self._undo.close()

    def job_ids(self) -> list[str]:
        """SLURM job ids of the worker jobs submitted so far."""
        if self.cluster is None:
            return []
        return [str(j.job_id) for j in self.cluster.workers.values() if getattr(j, "job_id", None)]

    def describe(self) -> str:
        s = self.settings
        where = f"partition {s.partition}" if s.partition else "default partition"
        return (
            f"slurm ({self.n_jobs} job(s) x {s.processes} worker(s), --mem "
            f"{slurm_memory(self.job_memory)}, {where})"
        )
