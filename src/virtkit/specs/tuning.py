"""The tuning advisor's reports: a VM's plan (``tune check``/``apply``) and the host's
(``tune host``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from virtkit.specs.common import _View

TuneProfile = Literal["latency", "throughput", "density"]


class TuneChange(_View):
    area: str = Field(description="What changes: vcpupin, emulatorpin, numatune, disk vda, ...")
    summary: str
    reason: str = Field(description="Why, in one sentence.")
    when: Literal["live", "next_boot", "manual"] = Field(
        description="live: applied to the running VM too; next_boot: from its next start; "
        "manual: advice an administrator carries out (the summary says how)."
    )
    outcome: str | None = Field(
        None, description="After apply: applied live, at next boot, not applied (manual)."
    )


class TuneReport(_View):
    vm: str
    profile: TuneProfile
    running: bool
    domain_type: str
    node: int | None = Field(None, description="The host NUMA node the VM is kept on.")
    vcpu_pins: dict[int, str] = Field(default_factory=dict)
    emulator_cpus: str | None = None
    iothread_cpus: str | None = None
    numa: str | None = None
    hugepages: str | None = None
    changes: list[TuneChange] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    diff: str = Field("", description="Unified diff of the persistent definition.")
    applied: bool = False


class HostTuneKnob(_View):
    name: str
    path: str
    current: str | None
    wanted: str
    reason: str
    revert: str = Field(description="The command that puts the old value back.")
    applied: bool = False
    error: str | None = None


class HostTuneReport(_View):
    profile: Literal["virtualization"]
    knobs: list[HostTuneKnob] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    applied: bool = False
