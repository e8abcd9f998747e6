"""Host capability probing: what this host can run, and whether KVM really works.

libvirt listing ``<domain type='kvm'>`` and ``/dev/kvm`` existing do not prove that a guest runs:
on some nested setups (e.g. a PVM kvm module) an ordinary guest kernel hangs in its decompressor.
So virtkit boots a real kernel under KVM for a few seconds and looks for its first printk line on
the serial console. The verdict is cached per host (host UUID, hypervisor version, and for local
hosts the kernel release) in a small JSON file, and decides each new VM's domain type.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virtkit.backend.console import ConsoleStream
from virtkit.backend.host import Host
from virtkit.errors import Unsupported, VirtkitError
from virtkit.xml.capabilities import Capabilities, DomainCapabilities
from virtkit.xml.domain import OS, Domain, serial_console

log = logging.getLogger(__name__)

PROBE_PREFIX = "virtkit-kvmprobe-"
PROBE_MARKER = b"Linux version"
_warned: set[str] = set()


@dataclass(frozen=True)
class KvmVerdict:
    usable: bool
    reason: str
    checked_at: float
    cached: bool = False
    # Only a firm verdict (the kernel booted, or it ran and printed nothing) is cached; a probe
    # that could not run (no kernel, a dropped connection, a busy console) is tried again.
    firm: bool = True


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
    ) -> None:
        self.host = host
        self.cache_dir = cache_dir
        self.probe_kernel = probe_kernel
        self.probe_timeout = probe_timeout
        self._facts: dict[tuple[int, str], HostFacts] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities.parse(self.host.capabilities_xml())

    def domain_capabilities(
        self, arch: str, machine: str | None, virt_type: str
    ) -> DomainCapabilities:
        return DomainCapabilities.parse(
            self.host.domain_capabilities_xml(None, arch, machine, virt_type)
        )

    def facts(self, arch: str = "x86_64", *, refresh: bool = False) -> HostFacts:
        self.host.connection.get()  # a reconnect bumps the generation and so refreshes facts
        key = (self.host.connection.generation, arch)
        if refresh or key not in self._facts:
            self._facts[key] = self._collect(arch, refresh)
        return self._facts[key]

    def _collect(self, arch: str, refresh: bool) -> HostFacts:
        caps = self.capabilities()
        guest = caps.guest_arch(arch)
        if guest is None:
            raise Unsupported(f"this host cannot run {arch} guests (no emulator for {arch})")
        types = caps.domain_types(arch)
        verdict = self.kvm_verdict(caps, arch, refresh=refresh)
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

    def _cache_key(self, caps: Capabilities) -> str:
        _driver, hv_version = self.host.hypervisor()
        key = f"{caps.host_uuid}|{hv_version}"
        if self.host.is_local:
            key += f"|{os.uname().release}"
        return key

    def _cache_file(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / "kvm-verdicts.json"

    def _load_cache(self) -> dict[str, dict[str, object]]:
        path = self._cache_file()
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_cache(self, key: str, verdict: KvmVerdict) -> None:
        path = self._cache_file()
        if path is None:
            return
        data = self._load_cache()
        data[key] = {k: v for k, v in asdict(verdict).items() if k not in ("cached", "firm")}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot cache the KVM verdict in %s: %s", path, exc)

    def kvm_verdict(
        self, caps: Capabilities | None = None, arch: str = "x86_64", *, refresh: bool = False
    ) -> KvmVerdict:
        caps = caps or self.capabilities()
        if "kvm" not in caps.domain_types(arch):
            return KvmVerdict(
                False,
                "libvirt offers no 'kvm' domain type on this host "
                "(no /dev/kvm, or the kvm module is not loaded)",
                time.time(),
            )
        key = self._cache_key(caps)
        if not refresh:
            cached = self._load_cache().get(key)
            if cached is not None:
                return KvmVerdict(
                    bool(cached["usable"]),
                    str(cached["reason"]),
                    float(str(cached["checked_at"])),
                    cached=True,
                )
        verdict = self._boot_probe(arch)
        if verdict.firm:
            self._save_cache(key, verdict)
        return verdict

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
            return KvmVerdict(
                False, f"a KVM test guest failed to start: {exc.message}", time.time(), firm=False
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
            )
        return KvmVerdict(
            False,
            f"a test kernel printed nothing within {self.probe_timeout:.0f} s "
            "under KVM (libvirt lists KVM but guests hang, as on a nested or PVM "
            "kvm module)",
            time.time(),
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
