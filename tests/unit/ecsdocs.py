"""What an ECS log line must be (docs/monitoring.md), for the unit and integration tests."""

from __future__ import annotations

import json
import re
from typing import Any

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TOP_DOTTED = {"@timestamp", "log.level", "ecs.version"}  # ecs-logging keeps these dotted


def ecs_document(line: str) -> dict[str, Any]:
    """The line as an ECS document, or an assertion error saying what is wrong with it."""
    doc = json.loads(line)
    assert isinstance(doc, dict), line
    assert TIMESTAMP.fullmatch(doc.get("@timestamp", "")), line
    assert doc.get("log.level") in ("debug", "info", "warning", "error", "critical"), line
    assert re.fullmatch(r"\d+\.\d+\.\d+", doc.get("ecs.version", "")), line
    assert isinstance(doc.get("message"), str), line
    assert doc.get("service", {}).get("name") == "virtkit", line
    assert isinstance(doc.get("log", {}).get("logger"), str), line

    def no_dots(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                assert "." not in key, f"dotted key {where}{key!r} not nested: {line}"
                no_dots(inner, f"{where}{key}.")

    no_dots({k: v for k, v in doc.items() if k not in TOP_DOTTED}, "")
    return doc


def field(doc: dict[str, Any], dotted: str) -> Any:
    """``doc["event"]["action"]`` for ``event.action`` (None when absent)."""
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
