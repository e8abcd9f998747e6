"""What every spec shares: the base classes, names, sizes, and turning pydantic's errors into
one clear :class:`InvalidInput` line.

Rules are checked once, in the types: a field typed :data:`Name` is a valid VM name wherever the
spec comes from (a YAML file, CLI flags, the Python API). A rule that has its own error code
raises :func:`rule_error`; :func:`check_model` keeps that code, :func:`parse_model` reports every
problem of a whole spec as ``invalid_spec``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from virtkit.errors import InvalidInput
from virtkit.specs.units import parse_size

NAME_MAX = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")

# error types raised by rule_error: check_model turns them into these codes
_RULE_CODES: set[str] = {"invalid_spec"}


def validate_name(name: str, what: str = "VM") -> str:
    """Return ``name`` if it is a usable libvirt object name, else raise :class:`InvalidInput`.

    Names become file names (disk images, logs) and QEMU arguments, so they are kept to a safe set:
    letters, digits, ``.``, ``_``, ``+``, ``-``, starting with a letter or digit, at most 64 chars.
    """
    if not isinstance(name, str) or name == "":
        raise InvalidInput(f"invalid {what} name: the name is empty", code="invalid_name")
    if len(name) > NAME_MAX:
        raise InvalidInput(
            f"invalid {what} name: {len(name)} characters, at most {NAME_MAX} allowed",
            code="invalid_name",
        )
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_', '+' and '-', "
            "starting with a letter or digit (no spaces, slashes or control characters)",
            code="invalid_name",
        )
    return name


def rule_error(code: str, message: str) -> PydanticCustomError:
    """A validation error for a rule with its own error code (``invalid_memory``, ...)."""
    _RULE_CODES.add(code)
    # the message goes in as context: names in it may hold braces
    return PydanticCustomError(code, "{message}", {"message": message})


def as_rule_error(exc: InvalidInput) -> PydanticCustomError:
    """A check that raised :class:`InvalidInput`, as a validation error with the same code."""
    return rule_error(exc.code, exc.message)


_T = TypeVar("_T")


def checked(check: Callable[..., _T], *args: Any) -> AfterValidator:
    """An after-validator running ``check(value, *args)``, a function raising InvalidInput."""

    def validate(value: Any) -> _T:
        try:
            return check(value, *args)
        except InvalidInput as exc:
            raise as_rule_error(exc) from None

    return AfterValidator(validate)


def name_rule(what: str) -> AfterValidator:
    """The one name rule (:func:`validate_name`), for names of a kind (``VM``, ``pool``...)."""
    return checked(validate_name, what)


Name = Annotated[str, name_rule("VM")]
"""A VM name: letters, digits, '.', '_', '+', '-', starting with a letter or digit; at most 64."""


def sized(default_unit: str, code: str = "invalid_size") -> BeforeValidator:
    """Sizes as text (``512M``, ``2G``) or numbers in ``default_unit``; text that is no size is
    a ``code`` error. Validated with the context ``{"ints_are_bytes": True}`` (the Python API's
    keyword arguments), integers are bytes."""

    def parse(value: Any, info: Any) -> int:
        integer = isinstance(value, int) and not isinstance(value, bool)
        if integer and (info.context or {}).get("ints_are_bytes"):
            return int(value)
        try:
            return parse_size(value, default_unit)
        except ValueError as exc:
            raise rule_error(code, str(exc)) from None

    return BeforeValidator(parse)


Size = Annotated[int, sized("b")]
"""A size in bytes, also given as text with a binary unit (``512M``, ``2GiB``)."""


class _Spec(BaseModel):
    """A user's request: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)


class _View(BaseModel):
    """What virtkit reports: frozen."""

    model_config = ConfigDict(frozen=True, defer_build=True)


_M = TypeVar("_M", bound=BaseModel)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_validation_error(exc: ValidationError, source: str = "VM spec") -> str:
    """One line naming every problem pydantic found, e.g. ``disks[0].sizee: unknown key``."""
    problems = []
    for error in exc.errors():
        where = _location(tuple(error["loc"]))
        prefix = f"{where}: " if where else ""
        if error["type"] == "extra_forbidden":
            problems.append(f"{where or 'spec'}: unknown key")
        elif error["type"] == "missing":
            problems.append(f"{where or 'spec'}: required")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{prefix}{message}")
    return f"invalid {source}: " + "; ".join(problems)


def _validate(model: type[_M], data: Any, source: str, context: dict[str, Any] | None) -> _M:
    if not isinstance(data, dict):
        raise InvalidInput(
            f"invalid {source}: expected a mapping of keys, got {type(data).__name__}",
            code="invalid_spec",
        )
    return model.model_validate(data, context=context)


def parse_model(model: type[_M], data: Any, source: str) -> _M:
    """Validate ``data`` as ``model``, raising InvalidInput (``invalid_spec``) with one line."""
    try:
        return _validate(model, data, source, None)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc, source), code="invalid_spec") from None


def check_model(
    model: type[_M], data: dict[str, Any], source: str, *, ints_are_bytes: bool = False
) -> _M:
    """Validate the arguments of one operation (``vm set``, ``disk attach``) as ``model``. The
    error keeps the code of the first rule broken (``invalid_memory``...), else ``invalid_spec``."""
    try:
        return _validate(model, data, source, {"ints_are_bytes": ints_are_bytes})
    except ValidationError as exc:
        first = exc.errors()[0]["type"]
        code = first if first in _RULE_CODES else "invalid_spec"
        raise InvalidInput(describe_validation_error(exc, source), code=code) from None
