"""``/api/v1/host/doctor`` and ``/api/v1/vms/{name}/doctor``: the doctor's findings, and its
safe fixes (as ``virtkit doctor [vm NAME] --fix``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, NOT_FOUND
from virtkit.api.routes.vms import VmName, _Body
from virtkit.api.security import Principal, require
from virtkit.errors import InvalidInput
from virtkit.specs.common import _View
from virtkit.specs.doctor import DoctorReport, Finding, FixResult

router = APIRouter(tags=["doctor"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]


class FixBody(_Body):
    confirm: bool = Field(
        description="Must be true: the fixes change the host (device modes, pools, hugepages, "
        "a paused VM resumed)."
    )
    checks: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Only the fixes of these checks (e.g. `pool.path`); all when empty.",
    )


class FixOutcome(_View):
    fixes: list[FixResult]
    report: DoctorReport = Field(description="The checks run again after the fixes.")


def _wanted(report: DoctorReport, checks: list[str]) -> list[Finding]:
    return [
        f
        for f in report.findings
        if f.fixable
        and f.severity != "ok"
        and (not checks or any(f.check == c or f.check.startswith(c + ".") for c in checks))
    ]


def _confirmed(body: FixBody) -> None:
    if not body.confirm:
        raise InvalidInput(
            "the fixes change the host: send confirm: true", code="confirmation_required"
        )


@router.get("/host/doctor", response_model=DoctorReport)
async def host_doctor(
    ctx: Ctx, _: Annotated[Principal, Depends(require("host.read"))]
) -> DoctorReport:
    """Every host check (what virt-host-validate checks, the KVM verdict, versions, daemons,
    pools, hugepages, THP and KSM, NUMA, memory pressure, AppArmor, clocks, networks), each
    with a severity, why it matters and the fix (docs/doctor.md)."""
    return await run_in_threadpool(ctx.client.doctor.host_report)


@router.post("/host/doctor/fix", response_model=FixOutcome)
def host_doctor_fix(
    ctx: Ctx, body: FixBody, _: Annotated[Principal, Depends(require("host.write"))]
) -> FixOutcome:
    """Apply the safe fixes of the host's findings (`checks` limits them), then check again."""
    _confirmed(body)
    doctor = ctx.client.doctor
    fixes = doctor.apply_fixes(_wanted(doctor.host_report(), body.checks))
    return FixOutcome(fixes=fixes, report=doctor.host_report())


@router.get("/vms/{name}/doctor", response_model=DoctorReport, responses=NOT_FOUND)
async def vm_doctor(
    ctx: Ctx, name: VmName, _: Annotated[Principal, Depends(require("vm.read"))]
) -> DoctorReport:
    """Why the VM will not start or is paused, and whether its disks, chains, agent, console,
    addresses and memory are sound."""
    return await run_in_threadpool(ctx.client.doctor.vm_report, name)


@router.post("/vms/{name}/doctor/fix", response_model=FixOutcome, responses=NOT_FOUND)
def vm_doctor_fix(
    ctx: Ctx,
    name: VmName,
    body: FixBody,
    _: Annotated[Principal, Depends(require("host.write"))],
) -> FixOutcome:
    """Apply the safe fixes of the VM's findings (resume after ENOSPC once there is room, start
    its pool or network, reserve hugepages), then check again."""
    _confirmed(body)
    doctor = ctx.client.doctor
    fixes = doctor.apply_fixes(_wanted(doctor.vm_report(name), body.checks))
    return FixOutcome(fixes=fixes, report=doctor.vm_report(name))
