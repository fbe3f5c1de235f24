"""``crrxr submit``: one SLURM job array over a manifest of IFUs, each element running
``crrxr build RSS STORE --resume``.

The job script asks for ``--requeue`` and ``--signal=B:USR1@<margin>``: before the time limit the
batch shell gets SIGUSR1, passes it to ``crrxr build`` (which stops starting chunks and exits, its
lease released) and requeues its own array element with ``scontrol requeue``, so the element starts
again later and ``--resume`` does only the chunks still missing. SIGTERM (``scancel``) is passed on
without a requeue. Rerunning ``crrxr submit`` on the same folder submits only IFUs that are neither
complete nor running nor already queued.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from crrxr.batch.manifest import MANIFEST, Entry, append_manifest, plan_manifest
from crrxr.batch.status import store_status
from crrxr.executors.slurm import SlurmSettings, job_memory, parse_walltime, retire_margin

#: signal margin before the time limit when the settings give no walltime (seconds)
DEFAULT_SIGNAL_MARGIN = 300
#: record of submitted jobs in the survey folder: ``job id<TAB>array indexes``
JOBS = "jobs.tsv"
#: SLURM job states of a queued or running element
QUEUED_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}


def array_spec(indexes: list[int], max_concurrent: int | None = None) -> str:
    """``--array`` value for ``indexes`` with runs compressed (``0-3,7,9-10%K``)."""
    parts: list[str] = []
    idx = sorted(set(indexes))
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    spec = ",".join(parts)
    return f"{spec}%{max_concurrent}" if max_concurrent else spec


def signal_margin(settings: SlurmSettings) -> int:
    """Seconds before the time limit at which the job is told to stop (``--signal``)."""
    if settings.walltime:
        return retire_margin(parse_walltime(settings.walltime))
    return DEFAULT_SIGNAL_MARGIN


@dataclass(frozen=True)
class JobScript:
    """The batch script of a survey folder and how to submit it."""

    text: str
    array: bool


def job_script(
    folder: str,
    settings: SlurmSettings,
    build_args: list[str],
    *,
    array: bool,
    indexes: list[int],
    max_concurrent: int | None = None,
    job_name: str = "crrxr",
    python: str | None = None,
    memory: int | None = None,
) -> JobScript:
    """The sbatch script: SLURM directives, the site's setup lines, then one manifest entry's build
    (the entry is ``SLURM_ARRAY_TASK_ID``, or ``CRRXR_INDEX`` for single jobs)."""
    folder = os.path.abspath(folder)
    logs = os.path.join(folder, "logs")
    directives = [
        f"--job-name={job_name}",
        f"--output={logs}/{'%A_%a' if array else '%j'}.out",
        "--open-mode=append",
        "--requeue",
        f"--signal=B:USR1@{signal_margin(settings)}",
        "--ntasks=1",
    ]
    if array:
        directives.append(f"--array={array_spec(indexes, max_concurrent)}")
    site = settings.sbatch_directives()
    if not settings.memory and memory:
        site.append(f"--mem={max(1, memory // 2**20)}M")
    directives += site
    py = shlex.quote(python or sys.executable)
    manifest = shlex.quote(os.path.join(folder, MANIFEST))
    build = " ".join(shlex.quote(a) for a in build_args)
    lines = ["#!/bin/bash"] + [f"#SBATCH {d}" for d in directives]
    lines += ["# written by crrxr submit", "set -u"]
    lines += list(settings.env_setup)
    lines += [
        'index="${SLURM_ARRAY_TASK_ID:-${CRRXR_INDEX:?no SLURM_ARRAY_TASK_ID or CRRXR_INDEX}}"',
        f"entry=$(awk -F'\\t' -v i=\"$index\" '$1 == i' {manifest})",
        'if [ -z "$entry" ]; then echo "crrxr submit: no manifest entry $index" >&2; exit 2; fi',
        "IFS=$'\\t' read -r _ rss store <<< \"$entry\"",
        'echo "crrxr submit: entry $index: $rss -> $store on $(hostname) (job ${SLURM_JOB_ID:-?})"',
        "requeue=0",
        f'{py} -m crrxr.cli build "$rss" "$store" --resume {build} &',
        "pid=$!",
        "# before the time limit SLURM sends USR1 here: pass it on, then requeue this element",
        "trap 'requeue=1; kill -USR1 $pid 2>/dev/null' USR1",
        "trap 'kill -TERM $pid 2>/dev/null' TERM",
        'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done',
        'wait "$pid"; rc=$?',
        'if [ "$requeue" = 1 ] && [ "$rc" != 0 ]; then',
        '    job="${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID}}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}"',
        '    echo "crrxr submit: stopped before the time limit (status $rc); requeueing $job"',
        '    scontrol requeue "$job"',
        "fi",
        'exit "$rc"',
    ]
    return JobScript("\n".join(lines) + "\n", array)


def build_argv(args: argparse.Namespace, build_parser: argparse.ArgumentParser, skip: set) -> list:
    """The ``crrxr build`` options of ``args`` as command-line words (those whose value is not the
    default), walking the build parser's own actions; ``skip``: dests not passed on."""
    out: list[str] = []
    for action in build_parser._actions:
        if not action.option_strings or action.dest in skip or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default or value == [] or value is False:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            out.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for v in value:
                out.append(f"{flag}={v}")
        else:
            if isinstance(value, str) and os.path.exists(value):
                value = os.path.abspath(value)  # the job may start in another folder
            out.append(f"{flag}={value}")
    return out


def _queued_indexes(folder: Path) -> set[int]:
    """Manifest indexes of this folder's earlier submissions that SLURM still queues or runs."""
    jobs = folder / JOBS
    if not jobs.is_file():
        return set()
    ids = [ln.split("\t")[0] for ln in jobs.read_text().splitlines() if ln.strip()]
    if not ids:
        return set()
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    queued: set[int] = set()
    single = _single_jobs(jobs)
    for line in out.stdout.splitlines():
        try:
            job, state = line.split()
        except ValueError:
            continue
        if state not in QUEUED_STATES:
            continue
        if "_" in job:
            element = job.split("_", 1)[1]
            if element.isdigit():
                queued.add(int(element))
        elif job in single:
            queued.add(single[job])
    return queued


def _single_jobs(jobs: Path) -> dict[str, int]:
    """job id -> manifest index of the non-array submissions recorded in ``jobs``."""
    out = {}
    for ln in jobs.read_text().splitlines():
        parts = ln.split("\t")
        if len(parts) == 3 and parts[2] == "single":
            out[parts[0]] = int(parts[1])
    return out


@dataclass
class SubmitPlan:
    """What ``crrxr submit`` will do: the manifest entries and the indexes to submit."""

    folder: Path
    entries: list[Entry]
    new_entries: list[Entry]
    todo: list[int]
    skipped: dict[str, int]  # reason -> count


def plan_submit(folder: str, rss_paths: list[str]) -> SubmitPlan:
    """Read the folder's manifest and stores: which IFUs still need a job (writes nothing)."""
    fold = Path(os.path.abspath(folder))
    if fold.exists() and not fold.is_dir():
        raise ValueError(f"--out {folder} is a file; give a folder for the survey")
    entries, new = plan_manifest(fold, rss_paths)
    if not entries:
        raise ValueError("no RSS stores given and no manifest in --out; nothing to submit")
    queued = _queued_indexes(fold)
    todo: list[int] = []
    skipped = {"complete": 0, "running": 0, "queued": 0, "not a cube": 0}
    for e in entries:
        if e.index in queued:
            skipped["queued"] += 1
            continue
        st = store_status(e.store)
        if st.state in ("complete", "running", "not a cube"):
            skipped[st.state] += 1
            continue
        todo.append(e.index)
    return SubmitPlan(fold, entries, new, todo, {k: v for k, v in skipped.items() if v})


def sbatch(script: Path, extra: list[str] | None = None) -> str:
    """Submit ``script``; the job id (raises ValueError with sbatch's own message on failure)."""
    cmd = ["sbatch", "--parsable", *(extra or []), str(script)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise ValueError(
            "crrxr submit needs SLURM's sbatch on PATH (run on a login node)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ValueError("sbatch did not answer within 120 s; is slurmctld reachable?") from None
    if proc.returncode != 0:
        raise ValueError(f"sbatch refused the job: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit(
    plan: SubmitPlan,
    script: JobScript,
    *,
    dry_run: bool = False,
    out=None,
) -> list[str]:
    """Write the manifest additions and the script into the folder and submit (job ids); with
    ``dry_run`` print the script and what would be submitted, writing nothing."""
    if dry_run:
        out = out or sys.stdout
        print(
            f"# crrxr submit --dry-run: {len(plan.todo)} of {len(plan.entries)} IFU(s) to "
            f"submit, manifest {plan.folder / MANIFEST}",
            file=out,
        )
        for e in plan.entries:
            mark = "submit" if e.index in plan.todo else "skip"
            print(f"# {e.index}\t{mark}\t{e.rss}\t{e.store}", file=out)
        print(script.text, file=out, end="")
        return []
    if not plan.todo:
        return []
    (plan.folder / "logs").mkdir(parents=True, exist_ok=True)
    append_manifest(plan.folder, plan.new_entries)
    n = sum(1 for _ in plan.folder.glob("job-*.sh"))
    path = plan.folder / f"job-{n + 1}.sh"
    while path.exists():
        n += 1
        path = plan.folder / f"job-{n + 1}.sh"
    path.write_text(script.text)
    ids: list[str] = []
    with open(plan.folder / JOBS, "a") as rec:
        if script.array:
            job = sbatch(path)
            rec.write(f"{job}\t{array_spec(plan.todo)}\tarray\n")
            ids.append(job)
        else:
            for i in plan.todo:
                job = sbatch(path, [f"--export=ALL,CRRXR_INDEX={i}"])
                rec.write(f"{job}\t{i}\tsingle\n")
                rec.flush()
                ids.append(job)
    return ids


def default_job_memory(settings: SlurmSettings, workers: int, max_memory: str | None) -> int:
    """``--mem`` of one element when the settings give none: ``workers`` build workers of the
    per-worker budget (``--max-memory``, else the planner's default)."""
    from crrxr.engine.plan import DEFAULT_BUDGET, parse_memory

    return job_memory(settings, workers, parse_memory(max_memory or DEFAULT_BUDGET))
