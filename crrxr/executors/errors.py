"""Errors an executor raises for the user (the CLI prints them without a traceback)."""

from __future__ import annotations


class WorkerLostError(ConnectionError):
    """A worker died and the scheduler gave up on its task; the chunks written so far are kept and
    ``--resume`` finishes the cube."""


class ClusterStartError(ConnectionError):
    """The cluster for the run could not be started (e.g. ``sbatch`` refused the worker jobs); the
    message carries the batch system's own words."""
