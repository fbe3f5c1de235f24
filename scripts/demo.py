"""The demo: until the engine exists, print the resolved default parameters for manga-127."""

from crrxr.cli import main

raise SystemExit(main(["params", "show", "manga-127"]))
