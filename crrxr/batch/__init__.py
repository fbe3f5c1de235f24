"""Surveys of many IFUs: ``crrxr submit`` (one SLURM job array over a manifest of cube builds) and
``crrxr status`` (per IFU, read from the cube stores themselves: ledger, attrs, lease)."""
