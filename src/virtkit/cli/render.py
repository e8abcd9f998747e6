"""Rendering for the CLI: human tables and text, or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic and the specs cost start-up time: `virtkit vm --help` needs neither
    from pydantic import BaseModel


def print_json(data: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if hasattr(data, "model_dump"):
        payload: Any = data.model_dump(mode="json")
    elif isinstance(data, dict):
        payload = data
    else:
        payload = [item.model_dump(mode="json") for item in data]
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain aligned table (no colours, stable for scripts and pipes)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        sys.stdout.write(f"{key.ljust(width)}  {'-' if value in (None, '') else value}\n")


def size(value: int | None) -> str:
    from virtkit.specs import format_size

    return "-" if value is None else format_size(value)
