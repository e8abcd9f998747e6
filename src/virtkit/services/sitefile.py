"""Reading a site file: YAML with the line of each value, so that every problem says
``site.yaml:12: vms[1].memory: ...``. Nothing is made or changed before the whole file is
good: the checks of the spec types and ``check_site`` (duplicates, hosts, dependencies) all
run, and all their problems are reported together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from virtkit.errors import InvalidInput
from virtkit.specs.site import Site, check_site

Loc = tuple[str | int, ...]


def _lines(
    node: yaml.Node, path: Loc, out: dict[Loc, int], problems: list[tuple[int, str]]
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                problems.append((key.start_mark.line + 1, f"{_dotted((*path, name))}: the key "
                                 f"{name!r} is given twice"))  # fmt: skip
            seen.add(name)
            out[(*path, name)] = key.start_mark.line + 1
            _lines(value, (*path, name), out, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out, problems)


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def parse_site(text: str, source: str = "site file") -> Site:
    """The site in ``text``; :class:`InvalidInput` (``invalid_site``) listing every problem,
    each as ``SOURCE:LINE: where: why``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidInput(f"{source}: the file is empty", code="invalid_site")
        data: Any = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(
            f"{source}:{line} not valid YAML: {problem}", code="invalid_site"
        ) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    problems: list[tuple[int, str]] = []
    _lines(node, (), lines, problems)
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}:1: a site file is a mapping (site:, vms:, ...)",
                           code="invalid_site")  # fmt: skip
    site: Site | None = None
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
            problems.append((_line_of(loc, lines), f"{_dotted(loc)}: {message}"))
    if site is not None:
        for loc, message in check_site(site):
            problems.append((_line_of(loc, lines), f"{_dotted(loc)}: {message}"))
    if problems:
        text_lines = [f"{source}:{line}: {message}" for line, message in sorted(problems)]
        raise InvalidInput(
            f"{len(problems)} problem(s) in {source}:\n" + "\n".join(text_lines),
            code="invalid_site",
        )
    assert site is not None
    return site


def load_site(path: str | Path) -> Site:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read site file {path}: {exc.strerror}",
                           code="invalid_site") from None  # fmt: skip
    return parse_site(text, str(path))
