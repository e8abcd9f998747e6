"""Building findings: one small helper, so every check reads the same."""

from __future__ import annotations

from collections.abc import Iterable

from virtkit.specs.doctor import Finding, Severity

OK, INFO, WARNING, ERROR = Severity.OK, Severity.INFO, Severity.WARNING, Severity.ERROR


def finding(
    check: str,
    severity: Severity,
    subject: str,
    summary: str,
    explanation: str = "",
    fix: str | None = None,
    *,
    action: str | None = None,
    args: dict[str, str] | None = None,
    validates: Iterable[str] = (),
) -> Finding:
    """A finding; ``action`` names the fix ``doctor --fix`` can apply (see fixes.py)."""
    return Finding(
        check=check,
        severity=severity,
        subject=subject,
        summary=summary,
        explanation=explanation,
        fix=fix,
        fixable=action is not None,
        fix_action=action,
        fix_args=dict(args or {}),
        validate_checks=list(validates),
    )
