"""Command-line options for the Ray and SLURM executors (shared by ``crrxr build/estimate/submit``)."""

from __future__ import annotations

import argparse

from crrxr.executors import ExecutorSettings, SlurmSettings

#: flag dest -> SlurmSettings field
_SLURM_FLAGS = {
    "partition": "partition",
    "account": "account",
    "walltime": "walltime",
    "job_cores": "cores",
    "job_processes": "processes",
    "job_memory": "memory",
    "interface": "interface",
    "job_directive": "job_directives",
    "local_directory": "local_directory",
    "log_directory": "log_directory",
    "env_setup": "env_setup",
}


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    """SLURM site settings: a YAML profile and flags that override it."""
    g = p.add_argument_group("SLURM site settings (a YAML profile, flags override it)")
    g.add_argument("--slurm-profile", default=None, metavar="FILE.yaml", help="site settings YAML")
    g.add_argument("--partition", "--queue", default=None, help="SLURM partition (--partition)")
    g.add_argument("--account", default=None, help="SLURM account (--account)")
    g.add_argument("--walltime", default=None, metavar="HH:MM:SS", help="job time limit (--time)")
    g.add_argument("--job-cores", type=int, default=None, metavar="N", help="--cpus-per-task")
    g.add_argument(
        "--job-processes", type=int, default=None, metavar="N", help="Dask workers per job"
    )
    g.add_argument(
        "--job-memory", default=None, metavar="SIZE", help="--mem per job (default: from the plan)"
    )
    g.add_argument("--interface", default=None, help="network interface of workers (ib0, lo)")
    g.add_argument(
        "--job-directive",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH option, e.g. --job-directive=--qos=normal (repeatable)",
    )
    g.add_argument("--local-directory", default=None, help="workers' scratch folder")
    g.add_argument("--log-directory", default=None, help="folder for the jobs' stdout/stderr")
    g.add_argument(
        "--env-setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run in the job before crrxr/Dask starts, e.g. 'module load python'",
    )


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--ray-address`` and the SLURM settings (for ``--scheduler ray`` / ``--scheduler slurm``)."""
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="join this Ray cluster (--scheduler ray; default RAY_ADDRESS, else a local Ray)",
    )
    add_slurm_options(p)


def slurm_settings(args: argparse.Namespace) -> SlurmSettings:
    """The SLURM settings of a command line: the profile, then the flags given."""
    base = (
        SlurmSettings.from_yaml(args.slurm_profile)
        if getattr(args, "slurm_profile", None)
        else SlurmSettings()
    )
    given = {field: getattr(args, dest, None) for dest, field in _SLURM_FLAGS.items()}
    return base.updated(**given)


def executor_settings(args: argparse.Namespace) -> str | ExecutorSettings:
    """What ``run_build(scheduler=...)`` takes: the plain name for the local/Dask schedulers, an
    :class:`ExecutorSettings` for ``ray`` and ``slurm``."""
    if args.scheduler not in ("ray", "slurm"):
        return args.scheduler
    return ExecutorSettings(
        args.scheduler, ray_address=args.ray_address, slurm=slurm_settings(args)
    )
