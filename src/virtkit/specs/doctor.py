"""What ``virtkit doctor`` reports: findings with a severity, a reason and a fix."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from virtkit.specs.common import _View


class Severity(StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.OK: 0, Severity.INFO: 1, Severity.WARNING: 2, Severity.ERROR: 3}


class Finding(_View):
    """One thing the doctor checked, and what it found."""

    check: str = Field(description="Stable id of the check, e.g. `kvm.usable`, `pool.path`.")
    severity: Severity
    subject: str = Field(description="What it is about: `host`, `pool default`, `vm web1`, ...")
    summary: str = Field(description="One line: what was found.")
    explanation: str = Field("", description="Why it matters, in one sentence.")
    fix: str | None = Field(None, description="The command or setting that fixes it.")
    fixable: bool = Field(False, description="`doctor --fix` can apply the fix itself.")
    fix_action: str | None = Field(None, description="The fix --fix applies (internal id).")
    fix_args: dict[str, str] = Field(default_factory=dict)
    validate_checks: list[str] = Field(
        default_factory=list,
        description="virt-host-validate checks this finding covers (its 'Checking ...' lines).",
    )


class DoctorReport(_View):
    """Everything the doctor found about one host or one VM."""

    uri: str
    subject: str
    checked_at: float
    findings: list[Finding]

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=Severity.OK)

    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity.rank >= Severity.WARNING.rank]


class FixResult(_View):
    """What ``doctor --fix`` did for one finding."""

    check: str
    subject: str
    applied: bool
    message: str
