"""Host capability probing: what this host can run, and whether KVM really works.

libvirt listing ``<domain type='kvm'>`` and ``/dev/kvm`` existing do not prove that a guest runs:
on some nested setups (e.g. a PVM kvm module) an ordinary guest kernel hangs in its decompressor.
So virtkit boots a real kernel under KVM for a few seconds and looks for its first printk line on
the serial console. The verdict is cached per host (host UUID, hypervisor version, and for local
hosts the kernel release) in a small JSON file, and decides each new VM's domain type.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from virtkit.backend import kvmdev, verdicts
from virtkit.backend.console import ConsoleStream
from virtkit.backend.host import Host
from virtkit.backend.kvmdev import QemuIdentity
from virtkit.backend.verdicts import KvmVerdict
from virtkit.errors import ConnectionLost, Unsupported, VirtkitError
from virtkit.xml.capabilities import Capabilities, DomainCapabilities
from virtkit.xml.domain import OS, Domain, serial_console

log = logging.getLogger(__name__)

PROBE_PREFIX = "virtkit-kvmprobe-"
PROBE_MARKER = b"Linux version"
NO_MODULE_FIX = (
    "load the kvm module (modprobe kvm_intel or modprobe kvm_amd) and enable hardware "
    "virtualization (VT-x/AMD-V) in the firmware; on a cloud VM, ask for nested virtualization"
)
SILENT_FIX = (
    "use a host with hardware virtualization (not a nested or PVM kvm module), or accept TCG"
)
PERMISSION_FIX = (
    "give /dev/kvm the kvm group and mode 0660 (chgrp kvm /dev/kvm && chmod 0660 /dev/kvm, "
    "what Debian's udev rule sets) and put the user QEMU runs as in group kvm"
)
# QEMU's words when it cannot use KVM: deterministic, unlike a lost connection or memory.
KVM_REFUSED = re.compile(r"kvm kernel module|/dev/kvm|initiali[sz]e kvm|kvm_init", re.IGNORECASE)
_warned: set[str] = set()


@dataclass(frozen=True)
class HostFacts:
    """What virtkit needs to know about a host to create VMs on it."""

    arch: str
    host_uuid: str
    domain_types: list[str]
    kvm: KvmVerdict
    domain_type: str
    emulator: str | None
    machines: list[str] = field(default_factory=list)


# Where kernels are: the host's own, and Debian's cloud kernel unpacked by scripts/install-deps.sh.
KERNEL_DIRS = ("/boot", "/var/cache/virtkit/kernel/boot")


def find_local_kernel() -> str | None:
    """The newest readable kernel image on this host, preferring Debian's small cloud kernel."""
    candidates = sorted(
        (p for d in KERNEL_DIRS for p in glob.glob(f"{d}/vmlinuz-*") if os.path.isfile(p)),
        key=os.path.getmtime,
        reverse=True,
    )
    cloud = [c for c in candidates if "cloud" in c]
    for path in cloud + candidates:
        if os.access(path, os.R_OK):
            return path
    return None


class CapabilityProbe:
    """Caches host capabilities per connection and the KVM verdict per host on disk."""

    def __init__(
        self,
        host: Host,
        *,
        cache_dir: Path | None = None,
        probe_kernel: str | None = None,
        probe_timeout: float = 15.0,
        kvm_device: Path = kvmdev.KVM_DEVICE,
        qemu_conf: Path = kvmdev.QEMU_CONF,
    ) -> None:
        self.host = host
        self.kvm_device = kvm_device
        self.qemu_conf = qemu_conf
        self.cache_dir = cache_dir
        self.probe_kernel = probe_kernel
        self.probe_timeout = probe_timeout
        self._facts: dict[tuple[int, str], HostFacts] = {}
        self.store = verdicts.VerdictStore(cache_dir)
        # The local fingerprint whose kept libvirt answers this probe serves, if any.
        self._kept_for: str | None = None
        self._primed = -1
        self._reprobing = False

    def capabilities(self) -> Capabilities:
        self._prime()
        return Capabilities.parse(self.host.capabilities_xml())

    def _prime(self) -> None:
        """Once per connection: where libvirt re-probes QEMU on every call, serve its kept
        answers (found by the local fingerprint alone, without asking libvirt)."""
        self.host.connection.get()
        generation = self.host.connection.generation
        if self._primed == generation:
            return
        self._primed = generation
        if not self._reprobing:
            self._from_local(self._local_fingerprint())

    def reprobe(self) -> None:
        """Ask libvirt afresh in this process: no kept answers, no cached verdict."""
        self._reprobing = True

    def domain_capabilities(
        self, arch: str, machine: str | None, virt_type: str
    ) -> DomainCapabilities:
        xml = self.host.domain_capabilities_xml(None, arch, machine, virt_type)
        if self._kept_for is not None:
            self.store.add_answers(self._kept_for, self.host.capability_answers())
        return DomainCapabilities.parse(xml)

    def hypervisor(self) -> tuple[str, str]:
        """(driver, version), from the kept copy where libvirt re-probes on every call."""
        return self.host.hypervisor()

    def facts(self, arch: str = "x86_64", *, refresh: bool = False) -> HostFacts:
        self.host.connection.get()  # a reconnect bumps the generation and so refreshes facts
        key = (self.host.connection.generation, arch)
        if refresh or key not in self._facts:
            self._facts[key] = self._collect(arch, refresh)
        return self._facts[key]

    def _collect(self, arch: str, refresh: bool) -> HostFacts:
        if refresh:
            self.reprobe()
        caps = self.capabilities()
        verdict = self.kvm_verdict(caps, arch, refresh=refresh)
        guest = caps.guest_arch(arch)
        if guest is None:
            raise Unsupported(f"this host cannot run {arch} guests (no emulator for {arch})")
        types = caps.domain_types(arch)
        if verdict.usable:
            domain_type = "kvm"
        elif "qemu" in types:
            domain_type = "qemu"
            # Warn once: when the verdict is made, not on every later command that reads it.
            if not verdict.cached and self.host.uri not in _warned:
                _warned.add(self.host.uri)
                log.warning(
                    "KVM is not usable on %s: %s. VMs run under TCG (software emulation), "
                    "which is many times slower.",
                    self.host.uri,
                    verdict.reason,
                )
        else:
            raise Unsupported(f"this host offers neither KVM nor TCG for {arch}")
        return HostFacts(
            arch=arch,
            host_uuid=caps.host_uuid or "",
            domain_types=types,
            kvm=verdict,
            domain_type=domain_type,
            emulator=guest.emulator,
            machines=caps.machine_names(arch, domain_type),
        )

    # -- the KVM verdict --------------------------------------------------------------------

    def _qemu_identity(self, caps: Capabilities) -> QemuIdentity | None:
        """Who QEMU runs as under KVM: libvirt's DAC label, else qemu.conf (local hosts)."""
        label = caps.dac_label("kvm")
        if label is not None:
            return kvmdev.identity_from_label(label)
        return kvmdev.identity_from_qemu_conf(self.qemu_conf)

    def _cache_key(self, caps: Capabilities) -> str:
        """Everything that can change the verdict: the host, QEMU's and libvirt's versions and,
        for a local host, the kernel, the device node (owner, mode, ctime) and QEMU's user."""
        _driver, hv_version = self.host.hypervisor()
        parts = [caps.host_uuid or self.host.uri, hv_version, self.host.libvirt_version()]
        if self.host.is_local:
            node = kvmdev.stat_device(self.kvm_device)
            who = self._qemu_identity(caps)
            parts += [
                os.uname().release,
                node.fingerprint if node else "no-device",
                who.fingerprint if who else "?",
            ]
        return "|".join(parts)

    def _local_fingerprint(self) -> str | None:
        if not self.host.is_local:
            return None
        node = kvmdev.stat_device(self.kvm_device)
        stamp = node.fingerprint if node else "no-device"
        return verdicts.local_fingerprint(self.host.uri, self.host.libvirt_version(), stamp)

    def _from_local(self, local: str | None) -> KvmVerdict | None:
        """The verdict for this local state, without asking libvirt for its capabilities."""
        if local is None:
            return None
        if local in verdicts.process_verdicts:
            return replace(verdicts.process_verdicts[local], cached=True)
        found = self.store.by_local(local)
        if found is None:
            return None
        verdict, answers = found
        if verdict.libvirt_reprobes and answers:
            self._serve_kept(local, answers)
        verdicts.process_verdicts[local] = verdict
        return verdict

    def _serve_kept(self, local: str, answers: dict[tuple[Any, ...], str]) -> None:
        log.info(
            "libvirt re-probes QEMU on every call while its QEMU user is denied /dev/kvm: "
            "using virtkit's copy of %s's capabilities",
            self.host.uri,
        )
        self.host.seed_capability_answers(answers)
        self._kept_for = local

    def kvm_verdict(
        self, caps: Capabilities | None = None, arch: str = "x86_64", *, refresh: bool = False
    ) -> KvmVerdict:
        """Usable or not, why, and the fix. Decided once: a firm verdict is kept on disk
        until something that decides it changes (see ``_cache_key`` and
        ``verdicts.local_fingerprint``), and one process asks at most once whatever the
        outcome; ``refresh`` tests again."""
        local = self._local_fingerprint()
        if not refresh:
            hit = self._from_local(local)
            if hit is not None:
                return hit
        caps = caps or self.capabilities()
        if "kvm" not in caps.domain_types(arch):
            return KvmVerdict(
                False,
                "libvirt offers no 'kvm' domain type on this host "
                "(no /dev/kvm, or the kvm module is not loaded)",
                time.time(),
                fix=NO_MODULE_FIX,
                kind="no-kvm-type",
            )
        key = self._cache_key(caps)
        if not refresh:
            memo = verdicts.process_verdicts.get(key)
            hit = replace(memo, cached=True) if memo else self.store.by_key(key)
            if hit is not None:
                verdicts.process_verdicts[key] = hit
                if local is not None:
                    self.store.remember_local(key, local)
                    verdicts.process_verdicts[local] = hit
                return hit
        verdict = self._precheck(caps) or self._boot_probe(arch)
        verdicts.process_verdicts[key] = verdict
        if local is not None:
            verdicts.process_verdicts[local] = verdict
        if verdict.firm:
            answers = self.host.capability_answers() if verdict.libvirt_reprobes else None
            self.store.save(key, verdict, local=local, answers=answers)
            if answers and local is not None:
                self._kept_for = local
        return verdict

    def known_kvm_verdict(self, arch: str = "x86_64") -> KvmVerdict | None:
        """The verdict if one is known (this process's, or a firm one kept on disk), without a
        probe boot; None when only a boot could tell (``host list`` over many hosts)."""
        hit = self._from_local(self._local_fingerprint())
        if hit is not None:
            return hit
        caps = self.capabilities()
        if "kvm" not in caps.domain_types(arch):
            return self.kvm_verdict(caps, arch)  # decided by the capabilities: no boot
        key = self._cache_key(caps)
        memo = verdicts.process_verdicts.get(key)
        return replace(memo, cached=True) if memo else self.store.by_key(key)

    def _precheck(self, caps: Capabilities) -> KvmVerdict | None:
        """A firm 'no' from local facts, in microseconds; None when only a boot can tell."""
        if not self.host.is_local:
            return None
        node = kvmdev.stat_device(self.kvm_device)
        if node is None:
            return KvmVerdict(
                False,
                f"{self.kvm_device} does not exist (the kvm module is not loaded)",
                time.time(),
                fix=NO_MODULE_FIX,
                kind="no-device",
            )
        who = self._qemu_identity(caps)
        if who is None or kvmdev.can_open(node, who):
            return None
        return KvmVerdict(
            False,
            f"libvirt runs QEMU as {who.describe()}, which cannot open "
            f"{node.path} ({node.describe()}): KVM fails with 'Permission denied'",
            time.time(),
            fix=kvmdev.permission_fix(node, who),
            kind="permission",
        )

    def _probe_kernel(self) -> str | None:
        if self.probe_kernel:
            return self.probe_kernel
        if not self.host.is_local:
            return None
        source = find_local_kernel()
        if source is None or self.cache_dir is None:
            return source
        # Probe with a private copy: libvirt relabels the files a guest boots from.
        copy = self.cache_dir / "kvm-probe" / os.path.basename(source)
        if not copy.exists():
            tmp = copy.with_suffix(".tmp")
            try:
                copy.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(copy.parent, 0o755)  # QEMU may run as an unprivileged user
                shutil.copyfile(source, tmp)
                os.chmod(tmp, 0o644)
                tmp.replace(copy)
            except OSError as exc:
                log.warning("cannot copy %s for the KVM probe: %s", source, exc)
                return None
        return str(copy)

    def _boot_probe(self, arch: str) -> KvmVerdict:
        kernel = self._probe_kernel()
        if kernel is None:
            return KvmVerdict(
                True,
                "libvirt offers KVM; not verified by a test boot (no kernel "
                "image to boot: set kvm_probe_kernel)",
                time.time(),
                firm=False,
                kind="unverified",
            )
        name = PROBE_PREFIX + secrets.token_hex(4)
        started = time.monotonic()
        log.info(
            "probing KVM on %s: booting %s under KVM for up to %.0f s",
            self.host.uri,
            kernel,
            self.probe_timeout,
        )
        try:
            outcome = self._boot_and_watch(name, kernel, arch)
        except VirtkitError as exc:
            # QEMU refusing KVM ("Could not access KVM kernel module", "failed to initialize
            # kvm") is deterministic; anything else (a lost connection, memory) may pass.
            message = " ".join(exc.message.split())
            firm = bool(KVM_REFUSED.search(message)) and not isinstance(exc, ConnectionLost)
            denied = firm and "permission denied" in message.lower()
            return KvmVerdict(
                False,
                f"a KVM test guest failed to start: {message}",
                time.time(),
                firm=firm,
                fix=PERMISSION_FIX if denied else NO_MODULE_FIX if firm else None,
                kind="permission" if denied else "refused" if firm else "failed",
            )
        elapsed = time.monotonic() - started
        if outcome == "booted":
            return KvmVerdict(
                True, f"a test kernel booted under KVM in {elapsed:.1f} s", time.time()
            )
        if outcome == "ended":
            return KvmVerdict(
                False,
                "the KVM test guest stopped before its kernel printed anything",
                time.time(),
                firm=False,
                kind="failed",
            )
        return KvmVerdict(
            False,
            f"a test kernel printed nothing within {self.probe_timeout:.0f} s "
            "under KVM (libvirt lists KVM but guests hang, as on a nested or PVM "
            "kvm module)",
            time.time(),
            fix=SILENT_FIX,
            kind="silent",
        )

    def _boot_and_watch(self, name: str, kernel: str, arch: str) -> str:
        """``booted`` (the marker came), ``silent`` (ran the whole timeout without it) or
        ``ended`` (the guest or its console went away first)."""
        dom = Domain()
        dom.type = "kvm"
        dom.name = name
        dom.memory_kib = 128 * 1024
        dom.memory_unit = "KiB"
        dom.vcpu = 1
        os_el = OS()
        os_el.type = "hvm"
        os_el.arch = arch
        os_el.kernel = kernel
        os_el.cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"
        dom.os = os_el
        dom.on_poweroff = dom.on_reboot = dom.on_crash = "destroy"
        serial, console = serial_console()
        dom.serials.append(serial)
        dom.consoles.append(console)
        # Paused first, so the console is attached before the kernel prints anything;
        # autodestroy, so the probe guest dies with this connection whatever happens here.
        guest = self.host.create_transient(dom.to_xml(), paused=True, autodestroy=True)
        try:
            with ConsoleStream(self.host, guest, force=True) as console_stream:
                guest.resume()
                seen = b""
                deadline = time.monotonic() + self.probe_timeout
                while time.monotonic() < deadline and not console_stream.closed:
                    seen += console_stream.read(timeout=0.2)
                    if PROBE_MARKER in seen:
                        return "booted"
                if PROBE_MARKER in seen:
                    return "booted"
                return "ended" if console_stream.closed else "silent"
        finally:
            try:
                if guest.is_active():
                    guest.destroy()
            except VirtkitError as exc:
                log.debug("probe guest %s already gone: %s", name, exc)
