"""The tuning advisor behind ``Client.tuning``: gathers the facts (topology, the VM, the other
VMs' pins, QEMU's version), asks the pure planner, shows the diff, and applies: the persistent
definition always, the pins live where the VM runs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import InvalidState, NotFound, Unsupported, VirtkitError
from virtkit.services.vmstate import lookup
from virtkit.specs.tuning import HostTuneKnob, HostTuneReport, TuneChange, TuneReport
from virtkit.tuning.hostplan import host_knobs, revert_command, write_knob
from virtkit.tuning.plan import (
    OtherVm,
    Plan,
    check_profile,
    make_plan,
    other_vm,
    vm_facts,
)
from virtkit.tuning.rewrite import rewrite, unified_diff
from virtkit.tuning.topology import (
    Topology,
    format_cpuset,
    parse_cpuset,
    topology_from_capabilities,
)
from virtkit.xml.domain import Domain

log = logging.getLogger(__name__)

HOST_PROFILES = ("virtualization",)
LOCK_DIR = Path("/run/virtkit")


@contextlib.contextmanager
def _host_lock(lock_dir: Path | None, uri: str) -> Iterator[None]:
    """One ``tune apply`` at a time per libvirt host (from this machine): two latency VMs
    planned at once could both pick the same free core. An flock, freed if the process dies."""
    if lock_dir is None:
        yield
        return
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"tune-{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # no place for a lock (not root): plan without one
        log.debug("no tuning lock in %s: %s", lock_dir, exc)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")[:3] if p.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def _direct_io(path: str) -> bool | None:
    """Whether the image opens with O_DIRECT (tmpfs, for one, refuses); None: cannot tell."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError as exc:
        return False if exc.errno == 22 else None  # EINVAL: the filesystem refuses O_DIRECT
    os.close(fd)
    return True


class TuningService:
    """Plans and applies per-VM tuning profiles and the host's virtualization profile."""

    def __init__(
        self,
        host: Host,
        *,
        sysfs_root: Path | None = Path("/sys"),
        lock_dir: Path | None = LOCK_DIR,
    ) -> None:
        self.host = host
        self.sysfs_root = sysfs_root
        self.lock_dir = lock_dir

    # -- facts ------------------------------------------------------------------------------

    def topology(self) -> Topology:
        """The host's topology; sysfs facts only where the host is this machine."""
        root = self.sysfs_root if self.host.is_local and self.sysfs_root is not None else None
        return topology_from_capabilities(self.host.capabilities_xml(), root)

    def _others(self, name: str) -> list[OtherVm]:
        found = []
        for guest in self.host.list_guests():
            try:
                if guest.name == name:
                    continue
                found.append(other_vm(guest.config()))
            except NotFound:  # undefined while we looked
                continue
        return found

    def _disk_access(self, config: Domain) -> dict[str, bool | None]:
        if not self.host.is_local:
            return {}
        return {
            d.target_dev: _direct_io(d.source_file)
            for d in config.disks
            if d.target_dev and d.source_file and d.device in (None, "disk")
        }

    def _plan(self, name: str, profile: str) -> tuple[Guest, Domain, Plan, bool]:
        wanted = check_profile(profile)
        guest = lookup(self.host, name)
        if not guest.is_persistent():
            raise InvalidState(
                f"VM {name!r} is transient: it has no persistent definition to tune",
                code="vm_transient",
            )
        config = guest.definition(inactive=True)
        running = guest.is_active()
        facts = vm_facts(config, running=running, direct_io=self._disk_access(config))
        qemu = _version(self.host.hypervisor()[1])
        plan = make_plan(self.topology(), facts, self._others(name), wanted, qemu_version=qemu)
        return guest, config, plan, running

    # -- use cases --------------------------------------------------------------------------

    def check(self, name: str, profile: str) -> TuneReport:
        """The plan for VM ``name`` under ``profile``, with the diff of its definition."""
        _guest, config, plan, running = self._plan(name, profile)
        return _report(plan, config, running)

    def apply(self, name: str, profile: str) -> TuneReport:
        """Define the tuned persistent definition; on a running VM, pin live what can be."""
        with _host_lock(self.lock_dir, self.host.uri):
            guest, config, plan, running = self._plan(name, profile)
            new = rewrite(config, plan)
            self.host.define(new.to_xml())
            live_done = self._apply_live(guest, plan) if running else {}
        outcomes = {}
        for change in plan.changes:
            if change.when == "manual":
                outcomes[change.area] = "not applied (do it by hand)"
            elif change.when == "live" and live_done.get(change.area) is None:
                outcomes[change.area] = "applied live and at next boot"
            elif change.when == "live":
                outcomes[change.area] = f"at next boot (live failed: {live_done[change.area]})"
            else:
                outcomes[change.area] = "at next boot" if running else "at next start"
        log.info("tuned VM %s for %s: %d changes", name, plan.profile, len(plan.changes))
        return _report(plan, config, running, new=new, outcomes=outcomes)

    def _apply_live(self, guest: Guest, plan: Plan) -> dict[str, str | None]:
        """Pins on the running VM: {area: None when done, else the error}."""
        done: dict[str, str | None] = {}
        wanted = {c.area for c in plan.changes if c.when == "live"}
        if "vcpupin" in wanted:

            def pin_all() -> None:
                for vcpu, cpus in sorted(plan.vcpu_pins.items()):
                    if vcpu >= plan.online_vcpus:
                        continue  # offline: no thread to pin; the definition has its pin
                    guest.pin_vcpu(vcpu, cpus, live=True, config=False)

            done["vcpupin"] = _try(pin_all)
        if "emulatorpin" in wanted and plan.emulator is not None:
            emulator = plan.emulator
            done["emulatorpin"] = _try(
                lambda: guest.pin_emulator(emulator, live=True, config=False)
            )
        if "iothreadpin" in wanted and plan.iothread is not None:
            iothread = plan.iothread
            done["iothreadpin"] = _try(
                lambda: guest.pin_iothread(1, iothread, live=True, config=False)
            )
        return done

    def host_check(self, profile: str = "virtualization") -> HostTuneReport:
        """What the host profile would change (read from this machine's sysfs)."""
        return self._host(profile, apply=False)

    def host_apply(self, profile: str = "virtualization") -> HostTuneReport:
        """Write the host profile's values; each knob says how to revert it."""
        return self._host(profile, apply=True)

    def _host(self, profile: str, *, apply: bool) -> HostTuneReport:
        if not self.host.is_local:
            raise Unsupported(
                f"tune host reads and writes this machine's /sys: {self.host.uri} is another "
                "host (run virtkit there)",
                code="tune_host_not_local",
            )
        if profile not in HOST_PROFILES:
            raise VirtkitError(
                f"unknown host tuning profile {profile!r}: use virtualization",
                code="tune_unknown_profile",
                expected=True,
            )
        root = self.sysfs_root or Path("/sys")
        defined = []
        for guest in self.host.list_guests():
            try:
                config = guest.config()
            except NotFound:
                continue
            numa = config.numatune
            nodes = None
            if numa is not None and numa.memory_nodeset:
                nodes = parse_cpuset(numa.memory_nodeset)
            defined.append((vm_facts(config), nodes))
        topology = self.topology()
        knobs, notes = host_knobs(root, topology, defined)
        views = []
        for knob in knobs:
            error = write_knob(root, knob) if apply else None
            views.append(
                HostTuneKnob(
                    name=knob.name,
                    path=str(root / knob.path),
                    current=knob.current,
                    wanted=knob.wanted,
                    reason=knob.reason,
                    revert=revert_command(root, knob),
                    applied=apply and error is None,
                    error=error,
                )
            )
        if not knobs:
            notes.append("nothing to change: the host already matches the profile")
        return HostTuneReport(profile="virtualization", knobs=views, notes=notes, applied=apply)


def _try(action: Callable[[], object]) -> str | None:
    try:
        action()
    except VirtkitError as exc:
        return exc.message
    return None


def _report(
    plan: Plan,
    config: Domain,
    running: bool,
    *,
    new: Domain | None = None,
    outcomes: dict[str, str] | None = None,
) -> TuneReport:
    after = new if new is not None else rewrite(config, plan)
    name = plan.vm
    choice = plan.hugepages
    hugepages = None
    if choice is not None:
        state = "reserved" if choice.reserved else f"to reserve: {choice.command}"
        hugepages = f"{choice.pages} x {choice.size_kib} KiB on node {choice.node} ({state})"
    return TuneReport(
        vm=name,
        profile=plan.profile,
        running=running,
        domain_type=config.type or "kvm",
        node=plan.node,
        vcpu_pins={v: format_cpuset(c) for v, c in sorted(plan.vcpu_pins.items())},
        emulator_cpus=format_cpuset(plan.emulator) if plan.emulator is not None else None,
        iothread_cpus=format_cpuset(plan.iothread) if plan.iothread is not None else None,
        numa=(
            f"{plan.numa_mode} {format_cpuset(plan.numa_nodes)}"
            if plan.numa_mode is not None
            else None
        ),
        hugepages=hugepages,
        changes=[
            TuneChange(
                area=c.area,
                summary=c.summary,
                reason=c.reason,
                when=c.when,
                outcome=(outcomes or {}).get(c.area),
            )
            for c in plan.changes
        ],
        warnings=plan.warnings,
        diff=unified_diff(config, after, name),
        applied=new is not None,
    )
