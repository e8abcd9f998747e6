"""The kernel's KSM interface (/sys/kernel/mm/ksm) and the per-process counters in /proc.

The root is a parameter so that tests (and hosts with an unusual layout) can point it elsewhere.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from virtkit.errors import InvalidInput, InvalidState, PermissionDenied, Unsupported

DEFAULT_ROOT = Path("/sys/kernel/mm/ksm")
RUN_MODES = {"0": "stopped", "1": "running", "2": "unmerging"}


@dataclass(frozen=True)
class Knob:
    """A setting the kernel accepts, and the values it accepts."""

    name: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: str) -> str:
        value = value.strip()
        if self.choices:
            if value not in self.choices:
                raise InvalidInput(
                    f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}",
                    code="invalid_ksm_value",
                )
            return value
        try:
            number = int(value)
        except ValueError:
            raise InvalidInput(
                f"{self.name} must be a whole number, got {value!r}", code="invalid_ksm_value"
            ) from None
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            raise InvalidInput(
                f"{self.name} must be between {self.low} and {self.high}, got {number}",
                code="invalid_ksm_value",
            )
        return str(number)


UINT_MAX = 2**32 - 1
KNOBS = {
    k.name: k
    for k in (
        Knob("run", choices=("0", "1", "2")),
        Knob("pages_to_scan", 1, UINT_MAX),
        Knob("sleep_millisecs", 0, UINT_MAX),
        Knob("max_page_sharing", 2, 1 << 20),
        Knob("merge_across_nodes", choices=("0", "1")),
        Knob("use_zero_pages", choices=("0", "1")),
        Knob("smart_scan", choices=("0", "1")),
        Knob("advisor_mode", choices=("none", "scan-time")),
        Knob("stable_node_chains_prune_millisecs", 1, UINT_MAX),
    )
}
COUNTERS = (
    "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "full_scans",
    "general_profit", "ksm_zero_pages", "pages_scanned", "stable_node_chains", "stable_node_dups",
)  # fmt: skip


class KsmSysfs:
    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = root

    def _require(self) -> None:
        if not (self.root / "run").exists():
            raise Unsupported(
                f"this kernel has no KSM ({self.root} is missing: CONFIG_KSM is off)",
                code="ksm_missing",
            )

    def read(self, name: str) -> str | None:
        """A value as the kernel prints it (``advisor_mode`` reduced to its selected choice)."""
        self._require()
        try:
            text = (self.root / name).read_text().strip()
        except FileNotFoundError:
            return None  # an older kernel without this knob
        if "[" in text:  # "[none] scan-time"
            text = text[text.index("[") + 1 : text.index("]")]
        return text

    def read_int(self, name: str) -> int | None:
        value = self.read(name)
        try:
            return None if value is None else int(value)
        except ValueError:
            return None

    def settings(self) -> dict[str, str]:
        return {n: v for n in KNOBS if (v := self.read(n)) is not None}

    def counters(self) -> dict[str, int]:
        return {n: v for n in COUNTERS if (v := self.read_int(n)) is not None}

    def write(self, name: str, value: str) -> None:
        """Write one knob, after checking it; kernel refusals become clear errors."""
        self._require()
        knob = KNOBS.get(name)
        if knob is None:
            raise InvalidInput(
                f"unknown KSM setting {name!r} (known: {', '.join(sorted(KNOBS))})",
                code="unknown_ksm_setting",
            )
        checked = knob.check(value)
        path = self.root / name
        if not path.exists():
            raise Unsupported(
                f"this kernel has no KSM setting {name!r}", code="ksm_setting_missing"
            )
        try:
            path.write_text(checked)
        except PermissionError:
            raise PermissionDenied(
                f"cannot set {name}: KSM settings need root", code="ksm_permission"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise InvalidState(
                    f"the kernel refuses to change {name} while pages are merged",
                    code="ksm_busy",
                ) from None
            if exc.errno == errno.EINVAL:
                raise InvalidInput(
                    f"the kernel refuses {name}={checked}", code="invalid_ksm_value"
                ) from None
            raise


def process_ksm(pid: int) -> dict[str, str]:
    """/proc/PID/ksm_stat as a dict (empty if the kernel or the process does not tell)."""
    try:
        text = Path(f"/proc/{pid}/ksm_stat").read_text()
    except OSError:
        return {}
    stats = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        stats[key.rstrip(":")] = value.strip()
    return stats


def ksmd_cpu_seconds() -> float | None:
    """CPU seconds the ksmd kernel thread has used since boot."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "ksmd":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None
