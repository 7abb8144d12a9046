"""Markdown that the report, the long-horizon table and the benchmarks write: numbers, tables,
and the generated blocks they fill inside hand-written pages (`<!-- name:start -->` ...
`<!-- name:end -->`, so that a test can regenerate a block and compare)."""

from __future__ import annotations

import re
from pathlib import Path


def number(value, digits: int = 4) -> str:
    """A float to `digits` decimals, anything else as it is, None as a dash."""
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(row) + " |" for row in rows)])


def block_pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(f"<!-- {name}:start -->") + ".*?" + re.escape(f"<!-- {name}:end -->"), re.S)


def has_block(text: str, name: str) -> bool:
    return bool(block_pattern(name).search(text))


def replace_block(text: str, name: str, body: str, source: str | Path) -> str:
    """`text` with its generated block `name` replaced by `body`; `source` names the file in the error."""
    if not has_block(text, name):
        raise ValueError(f"{source}: no <!-- {name}:start --> ... <!-- {name}:end --> block to fill")
    return block_pattern(name).sub(lambda _: f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->", text)
