#!/usr/bin/env python3
"""Regenerate the parameter table in README.md from ``crrxr.params.reconstruction_spec()``.

    python scripts/gen_param_table.py          # rewrite the README section in place
    python scripts/gen_param_table.py --check  # exit 1 if the README section is out of date

The table lives between ``<!-- params-table:start -->`` and ``<!-- params-table:end -->``;
tests/test_params_profiles.py fails when it drifts from the spec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crrxr.params import reconstruction_spec
from crrxr.params.table import markdown_table, readme_section, splice_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    parser.add_argument(
        "--readme", type=Path, default=README, help="README to update (default: repo's)"
    )
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    table = markdown_table(reconstruction_spec())
    if readme_section(text) == table:
        print(f"{args.readme}: parameter table is up to date")
        return 0
    if args.check:
        print(
            f"{args.readme}: parameter table is out of date; run scripts/gen_param_table.py",
            file=sys.stderr,
        )
        return 1
    args.readme.write_text(splice_readme(text, table), encoding="utf-8")
    print(f"{args.readme}: parameter table regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
