"""crrxr.engine: the out-of-core build of a cube from an RSS, chunked over wavelength.

- :mod:`~crrxr.engine.plan`: wavelength chunks from a memory budget; refuses absurd plans.
- :mod:`~crrxr.engine.settings`: profiles/config/``--set`` -> parameters, core config, grid, attrs.
- :mod:`~crrxr.engine.chunk`: the per-chunk task (read slice, solve, write regions, ledger mark).
- :mod:`~crrxr.engine.store`: RSS identity, ledger, orphan ``*.partial`` files, consolidation.
- :mod:`~crrxr.engine.lock`: one build per store (pid/host lock file, stale locks taken over).
- :mod:`~crrxr.engine.build`: :func:`~crrxr.engine.build.build_cube` (``crrxr.build_cube``).
- :mod:`~crrxr.engine.cli`: ``crrxr build`` and ``crrxr estimate``.
"""
