"""Tables of parameters: the README's Markdown table and the aligned text of ``crrxr params show``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .field import ParamField
from .spec import ParamSpec

README_START = "<!-- params-table:start -->"
README_END = "<!-- params-table:end -->"


def format_value(value: Any, max_items: int = 6) -> str:
    """A compact, exact text form: floats by ``repr``, arrays as ``[a, b, ...]`` (long ones
    summarized as ``float64 array (2, 4563), min .. max``)."""
    if isinstance(value, np.ndarray):
        if value.size > max_items or value.ndim > 1:
            if value.size == 0:
                return f"{value.dtype} array {value.shape}"
            return (
                f"{value.dtype} array {value.shape}, "
                f"{format_value(value.min().item())} .. {format_value(value.max().item())}"
            )
        return "[" + ", ".join(format_value(v) for v in value.tolist()) + "]"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _allowed(field: ParamField) -> str:
    if field.choices:
        return ", ".join(f"`{c}`" for c in field.choices)
    if field.bounds is not None:
        return f"`{field.bounds}`"
    return ""


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(spec: ParamSpec) -> str:
    """The README table: key, kind, units, default, allowed values, doc (generated; never edit)."""
    lines = [
        f"Spec `{spec.name}` v{spec.schema_version} (system id `{spec.system_id}`), "
        f"fingerprint `{spec.fingerprint()[:16]}`. Derived keys are computed, never set.",
        "",
        "| key | kind | units | type | default | allowed | doc |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in spec:
        if f.is_derived:
            default = ""
        elif f.is_required:
            default = "required"
        elif f.dtype == "str":
            default = f'`"{f.default}"`'
        else:
            default = f"`{format_value(f.default)}`"
        lines.append(
            f"| `{f.key}` | {f.kind} | {f.units} | {f.describe_type()} | {default} | "
            f"{_md(_allowed(f))} | {_md(f.doc)} |"
        )
    return "\n".join(lines) + "\n"


def text_table(
    rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, indent: str = ""
) -> str:
    """Left-aligned columns separated by two spaces (the last column is not padded)."""
    all_rows = [list(header)] if header else []
    all_rows += [list(r) for r in rows]
    if not all_rows:
        return ""
    ncol = max(len(r) for r in all_rows)
    for r in all_rows:
        r.extend([""] * (ncol - len(r)))
    widths = [max(len(r[i]) for r in all_rows) for i in range(ncol)]
    out = []
    for n, r in enumerate(all_rows):
        line = "  ".join(
            c.ljust(widths[i]) if i < ncol - 1 else c for i, c in enumerate(r)
        ).rstrip()
        out.append(indent + line)
        if header and n == 0:
            out.append(indent + "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(out) + "\n"


def splice_readme(readme: str, table: str) -> str:
    """``readme`` with the text between the params-table markers replaced by ``table``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} section")
    return readme[: start + len(README_START)] + "\n" + table + readme[end:]


def readme_section(readme: str) -> str:
    """The text between the params-table markers (without the newline after the start marker)."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} section")
    return readme[start + len(README_START) : end].removeprefix("\n")
