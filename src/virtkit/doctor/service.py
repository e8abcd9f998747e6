"""``Client.doctor``: run the host or VM checks, and apply the safe fixes of their findings."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.host import Host
from virtkit.backend.procfs import qemu_pids
from virtkit.doctor import localfacts as lf
from virtkit.doctor import validate
from virtkit.doctor.findings import WARNING, finding
from virtkit.doctor.fixes import FIXES, FixContext
from virtkit.doctor.hostchecks import HOST_CHECKS, HostContext
from virtkit.doctor.vmchecks import VM_CHECKS, VMContext
from virtkit.errors import VirtkitError
from virtkit.ksm.sysfs import process_ksm
from virtkit.specs.common import validate_name
from virtkit.specs.doctor import DoctorReport, Finding, FixResult
from virtkit.specs.network import GuestAddress
from virtkit.specs.storage import PoolInfo

log = logging.getLogger(__name__)
C = TypeVar("C")


def _run(checks: Sequence[Callable[[C], list[Finding]]], ctx: C, subject: str) -> list[Finding]:
    """Every check; one that fails is a finding of its own, never the end of the report."""
    out: list[Finding] = []
    for check in checks:
        try:
            out.extend(check(ctx))
        except VirtkitError as exc:
            out.append(
                finding(
                    f"doctor.{check.__name__}",
                    WARNING,
                    subject,
                    f"could not check {check.__name__}: {exc}",
                )
            )
        except Exception as exc:  # a bug in one check must not hide the others' findings
            log.exception("doctor check %s failed", check.__name__)
            out.append(
                finding(
                    f"doctor.{check.__name__}",
                    WARNING,
                    subject,
                    f"could not check {check.__name__}: {exc!r}",
                )
            )
    return out


class DoctorService:
    def __init__(
        self,
        host: Host,
        probe: CapabilityProbe,
        *,
        pools: Callable[[], list[PoolInfo]],
        addresses: Callable[[str], list[GuestAddress]],
        console_answers: Callable[[str], bool],
        qemu_log_dir: Path,
        root: Path = lf.ROOT,
    ) -> None:
        self.host = host
        self.probe = probe
        self.pools = pools
        self.addresses = addresses
        self.console_answers = console_answers
        self.qemu_log_dir = qemu_log_dir
        self.root = root

    def host_report(self) -> DoctorReport:
        """Every host check: virt-host-validate's (local hosts), then virtkit's own."""
        subject = "host"
        findings: list[Finding] = []
        if self.host.is_local:
            findings.extend(
                _run([lambda r: validate.checks(r, self.probe.kvm_device)], self.root, subject)
            )
        ctx = HostContext(self.host, self.probe, self.pools, self.root)
        findings.extend(_run(HOST_CHECKS, ctx, subject))
        return DoctorReport(
            uri=self.host.uri, subject=subject, checked_at=time.time(), findings=findings
        )

    def vm_report(self, name: str, *, try_start: bool = False) -> DoctorReport:
        """``try_start``: a shut-off VM is started paused (no guest code runs) and stopped
        again, to hear libvirt's own reason when it will not start."""
        validate_name(name)
        guest = self.host.lookup(name)
        state, reason = guest.state_reason()
        config = guest.config()
        live = guest.definition() if guest.is_active() else None
        uuid = guest.uuid

        def ksm_profit() -> int | None:
            pid = qemu_pids([uuid]).get(uuid)
            value = process_ksm(pid).get("ksm_process_profit") if pid else None
            return int(value) if value is not None else None

        ctx = VMContext(
            self.host,
            guest,
            config,
            live,
            state,
            reason,
            self.qemu_log_dir,
            addresses=lambda: self.addresses(name),
            ksm_profit=ksm_profit,
            console_answers=lambda: self.console_answers(name),
            root=self.root,
            try_start=try_start,
        )
        findings = _run(VM_CHECKS, ctx, f"vm {name}")
        return DoctorReport(
            uri=self.host.uri, subject=f"vm {name}", checked_at=time.time(), findings=findings
        )

    def apply_fixes(self, findings: Sequence[Finding]) -> list[FixResult]:
        """Apply the fix of each fixable finding (once per distinct fix); a fix that fails is
        reported, and the others still run."""
        ctx = FixContext(self.host, self.probe.kvm_device, self.root)
        results = []
        done: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for item in findings:
            if not item.fixable or item.fix_action not in FIXES:
                continue
            key = (item.fix_action, tuple(sorted(item.fix_args.items())))
            if key in done:
                continue
            done.add(key)
            try:
                message = FIXES[item.fix_action](ctx, item.fix_args)
                results.append(
                    FixResult(check=item.check, subject=item.subject, applied=True, message=message)
                )
            except (VirtkitError, OSError) as exc:
                results.append(
                    FixResult(
                        check=item.check, subject=item.subject, applied=False, message=str(exc)
                    )
                )
        if any(r.applied and r.check == "kvm.usable" for r in results):
            self.probe.reprobe()  # the verdict depends on what was just changed
        return results
