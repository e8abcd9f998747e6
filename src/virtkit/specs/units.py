"""Sizes: binary units, ``512M`` -> bytes and back. Pure and free of pydantic, so that the CLI's
renderers can import it without building any model."""

from __future__ import annotations

import re
import time

from virtkit.errors import InvalidInput

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": TiB,
    "tb": TiB,
    "tib": TiB,
}
_SIZE_RE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_size(value: object, default_unit: str = "b") -> int:
    """Parse ``512M``, ``1.5G``, ``2GiB``, ``1024`` (in ``default_unit``) into bytes.

    Units are binary (``G`` = GiB), as in qemu-img and libvirt.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        number, unit = float(value), default_unit
    elif isinstance(value, float):
        number, unit = value, default_unit
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if not match:
            raise ValueError(f"not a size: {value!r} (examples: 512M, 2G, 10GiB)")
        number = float(match.group(1))
        unit = match.group(2) or default_unit
    else:
        raise ValueError(f"not a size: {value!r}")
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {value!r} (use K, M, G or T)")
    return int(number * factor)


def format_size(num_bytes: int) -> str:
    """``536870912`` -> ``512 MiB``; exact binary units where they fit, one decimal otherwise."""
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(num_bytes) >= factor:
            value = num_bytes / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{num_bytes} B"


def format_duration(seconds: float | None) -> str:
    """``3720`` -> ``1h 2m``: the two largest units; ``-`` for none."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE_RE = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,6})?)([smhd])", re.ASCII)


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``90s``, ``30m``, ``6h``, ``7d`` before ``now`` (default: the time), as Unix time; None
    for none. What ``ksm history|report --since`` and the API's ``since`` take."""
    if not text:
        return None
    match = _AGE_RE.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(
            f"since takes a duration like 90s, 30m, 6h or 7d, got {text!r}", code="invalid_since"
        )
    start = time.time() if now is None else now
    return start - float(match.group(1)) * _AGE_UNITS[match.group(2)]
