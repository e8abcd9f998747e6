"""Moving a VM to another host (``virtkit vm migrate NAME --to HOST``): live (peer to peer, the
source's libvirtd talking to the target's) or offline, with shared storage or copying it.

Every check runs before anything moves (``plan``), and every failure is said at once: the VM's
CPU on the target's hypervisor, its storage (there already, or a matching pool with room to copy
into), free memory, its networks, its machine type, no device only this host has, no VM of that
name or UUID on the target. A live migration measures the guest's dirty rate first and predicts
the transfer time and downtime from it and the link; ``--auto`` picks plain pre-copy,
auto-converge or post-copy from that prediction. While it runs, progress comes from the job's
statistics; a cancel, a timeout or any failure leaves the VM running on the source and removes
what virtkit made on the target (copied volumes and seeds, a definition libvirt left).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from virtkit.backend.migration import MigrateFlags, Migration, compare_cpu, completed_stats
from virtkit.errors import (
    BackendError,
    Cancelled,
    InvalidInput,
    InvalidState,
    NotFound,
    Timeout,
    VirtkitError,
)
from virtkit.specs.fleet import (
    DiskMove,
    MigrateOptions,
    MigrationCheck,
    MigrationPlan,
    MigrationResult,
)
from virtkit.specs.states import VMState
from virtkit.xml.domain import Domain
from virtkit.xml.storage import Pool, Volume

if TYPE_CHECKING:
    from virtkit.backend.capabilities import CapabilityProbe
    from virtkit.backend.guest import Guest
    from virtkit.backend.host import Host

log = logging.getLogger(__name__)

MIB = 1 << 20
POLL = 0.5
DEFAULT_LINK_MIB = 1170.0  # about 10 Gbit/s, when neither a bandwidth nor a link speed is given
DEFAULT_DOWNTIME_MS = 300  # QEMU's default maximum downtime
# post-copy is switched on once pre-copy has done this many passes without converging
POSTCOPY_AFTER_ITERATIONS = 2

# progress(phase, done, total, detail)
MigrateProgress = Callable[[str, int, int | None, dict[str, object]], None]


class End(Protocol):
    """One end of a migration: a client of its host (``virtkit.Client`` is one)."""

    host: Host

    @property
    def probe(self) -> CapabilityProbe: ...


@dataclass
class _Prepared:
    """What a migration made on the target before it ran (removed if it fails)."""

    volumes: list[str] = field(default_factory=list)


def predict(ram: int, dirty: int, link: float, downtime_ms: int) -> tuple[bool, float, float, int]:
    """Pre-copy's course for ``ram`` bytes dirtied at ``dirty`` bytes/s over a ``link`` of
    bytes/s: (converges, seconds, downtime in ms, passes). Each pass sends what the last one
    left dirty; it ends when what is left goes within the allowed downtime."""
    if link <= 0:
        return False, math.inf, math.inf, 0
    allowed = link * downtime_ms / 1000
    remaining, seconds, passes = float(ram), 0.0, 0
    while remaining > allowed:
        took = remaining / link
        seconds += took
        passes += 1
        remaining = min(float(ram), dirty * took)
        if passes >= 30 or (dirty >= link and passes >= 3):
            return False, math.inf, remaining / link * 1000, passes
    seconds += remaining / link
    return True, seconds, remaining / link * 1000, passes + 1


class MigrationService:
    """Migrate VMs from ``source`` to ``target`` (clients of the two hosts)."""

    def __init__(self, source: End, target: End, *, source_name: str, target_name: str,
                 target_uri: str) -> None:  # fmt: skip
        self.source = source
        self.target = target
        self.source_name = source_name
        self.target_name = target_name
        self.target_uri = target_uri  # as the source's libvirtd reaches the target's

    # -- the plan: every check before anything moves ----------------------------------------

    def plan(self, name: str, opts: MigrateOptions, *, predict: bool = True) -> MigrationPlan:
        """Every check (and, with ``predict``, for a live migration the guest's dirty rate
        measured and pre-copy's course predicted: a second or so)."""
        guest = self.source.host.lookup(name)
        state = guest.state()[0]
        running = state in (VMState.RUNNING, VMState.PAUSED)
        checks: list[MigrationCheck] = []

        def check(what: str, ok: bool, detail: str) -> None:
            checks.append(MigrationCheck(name=what, ok=ok, detail=detail))

        if running and opts.offline:
            check("state", False, f"VM {name} is {state.value}: --offline moves a shut-off VM "
                  "(shut it down first, or migrate it live)")  # fmt: skip
        elif not running and not opts.offline:
            check("state", True, f"VM {name} is {state.value}: moved offline (its definition)")
        else:
            check("state", True, f"{state.value}: {'live' if running else 'offline'}")
        live = running and not opts.offline
        mig = Migration(guest)
        dom = Domain.parse(mig.migratable_xml(inactive=not live))
        uuid = guest.uuid
        self._check_name(name, uuid, check)
        if running:
            self._check_memory(dom, check)
        self._check_cpu_and_machine(dom, check)
        self._check_networks(dom, check)
        self._check_devices(dom, check)
        disks = self._plan_disks(dom, opts, live=live, check=check)
        plan = MigrationPlan(
            vm=name, uuid=uuid, source=self.source_name, target=self.target_name, live=live,
            mode="offline" if not live else "precopy", disks=disks, checks=checks,
            ok=all(c.ok for c in checks), memory=(dom.memory_kib or 0) * 1024,
        )  # fmt: skip
        if live and plan.ok and predict:
            plan = self._predict(mig, plan, opts)
        return plan

    def _check_name(self, name: str, uuid: str, check: Callable[[str, bool, str], None]) -> None:
        try:
            other = self.target.host.guest_by_uuid(uuid)
            check("name", False, f"the target already has this VM's UUID {uuid} "
                  f"(as {other.name})")  # fmt: skip
            return
        except NotFound:
            pass
        if self.target.host.exists(name):
            check("name", False, f"the target already has a VM named {name}")
        else:
            check("name", True, "no VM of that name or UUID on the target")

    def _check_memory(self, dom: Domain, check: Callable[[str, bool, str], None]) -> None:
        from virtkit.specs import format_size

        need = (dom.current_memory_kib or dom.memory_kib or 0) * 1024
        _total, free = self.target.host.memory()
        check("memory", free >= need,
              f"needs {format_size(need)}, the target has {format_size(free)} free")  # fmt: skip

    def _check_cpu_and_machine(self, dom: Domain, check: Callable[[str, bool, str], None]) -> None:
        caps = self.target.probe.capabilities()
        arch = (dom.os.arch if dom.os is not None else None) or caps.host_arch or "x86_64"
        virt = dom.type or "qemu"
        offered = caps.domain_types(arch)
        if virt not in offered:
            check("hypervisor", False, f"the VM runs as {virt}; the target offers "
                  f"{', '.join(offered) or 'nothing'} for {arch}")  # fmt: skip
            return
        machine = dom.os.machine if dom.os is not None else None
        names = caps.machine_names(arch, virt)
        if machine and names and machine not in names:
            check("machine", False, f"machine type {machine} is not offered by the target's "
                  f"QEMU ({', '.join(n for n in names if '-' in n)[:200]})")  # fmt: skip
        else:
            check("machine", True, f"machine type {machine or 'default'} offered")
        cpu = dom.node.find("cpu")
        if cpu is None or (cpu.get("mode") in (None, "custom") and cpu.find("model") is None):
            check("cpu", True, "the hypervisor's default CPU")
            return
        if cpu.get("mode") == "host-passthrough":
            check("cpu", True, "host-passthrough: the target's CPU must be the same model "
                  "(not checked by libvirt's comparison)")  # fmt: skip
            return
        import xml.etree.ElementTree as ET

        ok, why = compare_cpu(self.target.host, ET.tostring(cpu, encoding="unicode"), arch,
                              machine, virt)  # fmt: skip
        check("cpu", ok, why or "the target can run the guest's CPU")

    def _check_networks(self, dom: Domain, check: Callable[[str, bool, str], None]) -> None:
        nets = self.target.host.networks
        for nic in dom.interfaces:
            if nic.type == "network" and nic.source_network:
                net = nic.source_network
                if not nets.exists(net):
                    check("network", False, f"NIC {nic.mac}: the target has no network {net}")
                elif not nets.state(net)[0]:
                    check("network", False, f"NIC {nic.mac}: network {net} is not active on "
                          "the target (virtkit net start)")  # fmt: skip
                else:
                    check("network", True, f"NIC {nic.mac}: network {net} on the target")
            elif nic.type == "bridge" and nic.source_bridge:
                found = self.target.host.interface_exists(nic.source_bridge)
                check("network", found, f"NIC {nic.mac}: bridge {nic.source_bridge} "
                      f"{'on' if found else 'missing on'} the target")  # fmt: skip

    def _check_devices(self, dom: Domain, check: Callable[[str, bool, str], None]) -> None:
        local = [
            f"{d.tag} ({d.get('type') or d.get('mode') or ''})".replace(" ()", "")
            for path in ("devices/hostdev", "devices/filesystem", "devices/smartcard")
            for d in dom.node.findall(path)
        ]
        check("devices", not local, "devices only this host has: " + ", ".join(local)
              if local else "no device only this host has")  # fmt: skip

    def _target_volume(self, path: str) -> str | None:
        """The target's volume at ``path`` (its pools refreshed first where one covers the
        directory): shared storage."""
        storage = self.target.host.storage
        directory = os.path.dirname(path)
        for pool_name in storage.pool_names():
            xml = storage.pool_xml(pool_name)
            if (
                xml
                and Pool.parse(xml).target_path == directory
                and storage.pool_is_active(pool_name)
            ):
                with contextlib.suppress(VirtkitError):
                    storage.refresh_pool(pool_name)
        return storage.volume_xml_by_path(path)

    def _plan_disks(
        self, dom: Domain, opts: MigrateOptions, *, live: bool,
        check: Callable[[str, bool, str], None],
    ) -> list[DiskMove]:  # fmt: skip
        from virtkit.specs import format_size

        moves: list[DiskMove] = []
        need: dict[str, int] = {}
        src = self.source.host.storage
        dst = self.target.host.storage
        for disk in dom.disks:
            path = disk.source_file
            if not path or disk.type not in ("file", None):
                if disk.source:
                    check("storage", False, f"disk {disk.target_dev}: {disk.type} storage "
                          f"({disk.source}) is not moved by virtkit")  # fmt: skip
                continue
            cdrom = disk.device == "cdrom" or disk.readonly
            if self._target_volume(path) is not None:
                moves.append(DiskMove(target=disk.target_dev or "?", source=path, dest=path,
                                      action="shared"))  # fmt: skip
                check("storage", True, f"disk {disk.target_dev}: {path} is on the target too "
                      "(shared storage)")  # fmt: skip
                continue
            if not opts.copy_storage:
                check("storage", False, f"disk {disk.target_dev}: {path} is not on the target: "
                      "use --copy-storage, or shared storage the target has as a pool")  # fmt: skip
                continue
            vol_xml = src.volume_xml_by_path(path)
            pool = src.volume_pool_by_path(path)
            if vol_xml is None or pool is None:
                check("storage", False, f"disk {disk.target_dev}: {path} is in no storage pool "
                      "here: virtkit copies pool volumes only")  # fmt: skip
                continue
            vol = Volume.parse(vol_xml)
            if not live and not cdrom and vol.backing_path:
                check("storage", False, f"disk {disk.target_dev}: {path} has a backing file: "
                      "an offline copy would lose it (migrate it live, which flattens, or "
                      "flatten it first: virtkit vm disk flatten)")  # fmt: skip
                continue
            target_pool_xml = dst.pool_xml(pool)
            if target_pool_xml is None or not dst.pool_is_active(pool):
                check("storage", False, f"disk {disk.target_dev}: the target has no active "
                      f"pool {pool} to copy {os.path.basename(path)} into")  # fmt: skip
                continue
            tp = Pool.parse(target_pool_xml)
            dest = os.path.join(tp.target_path or "", vol.name or os.path.basename(path))
            if dst.volume_xml_by_path(dest) is not None or (
                vol.name and vol.name in {Volume.parse(x).name for x in dst.volume_xmls(pool)}
            ):
                check("storage", False, f"disk {disk.target_dev}: the target's pool {pool} "
                      f"already has {vol.name}")  # fmt: skip
                continue
            # a copy is whole: a live copy flattens the chain, so it may take the capacity
            size = (vol.allocation or 0) if cdrom or not live else (vol.capacity or 0)
            need[pool] = need.get(pool, 0) + size
            moves.append(DiskMove(
                target=disk.target_dev or "?", source=path, dest=dest, pool=pool,
                action="upload" if cdrom or not live else "copy", size=size,
                format=vol.format or "raw", capacity=vol.capacity or 0,
            ))  # fmt: skip
        for pool, size in need.items():
            available = Pool.parse(dst.pool_xml(pool) or "<pool/>").available or 0
            check("storage", available >= size, f"the target's pool {pool}: "
                  f"{format_size(available)} free for {format_size(size)}")  # fmt: skip
        return moves

    def _predict(self, mig: Migration, plan: MigrationPlan, opts: MigrateOptions) -> MigrationPlan:
        dirty = mig.dirty_rate(opts.dirty_rate_seconds)
        link_mib = min(x for x in (opts.bandwidth_mib, opts.link_mib or DEFAULT_LINK_MIB) if x)
        link = link_mib * MIB
        downtime = opts.max_downtime_ms or DEFAULT_DOWNTIME_MS
        ram = plan.memory
        converges, seconds, down, passes = predict(ram, dirty or 0, link, downtime)
        mode = "precopy"
        if opts.auto and not converges:
            mode = "auto-converge" if (dirty or 0) < link * 0.8 else "postcopy"
        elif opts.auto and opts.timeout and seconds > opts.timeout:
            mode = "postcopy"
        return plan.model_copy(update={
            "dirty_rate": dirty, "link": int(link), "mode": mode,
            "predicted_seconds": None if math.isinf(seconds) else round(seconds, 2),
            "predicted_downtime_ms": None if math.isinf(down) else round(down, 1),
            "converges": converges, "passes": passes,
        })  # fmt: skip

    # -- the migration ----------------------------------------------------------------------

    def migrate(
        self,
        name: str,
        opts: MigrateOptions,
        *,
        progress: MigrateProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> MigrationResult:
        # the dirty rate is measured where it decides something (--auto): a plain migration
        # costs no more than libvirt's own
        plan = self.plan(name, opts, predict=opts.auto)
        if not plan.ok:
            failed = "; ".join(c.detail for c in plan.checks if not c.ok)
            raise InvalidState(f"VM {name} cannot move to {self.target_name}: {failed}",
                               code="migration_refused")  # fmt: skip
        guest = self.source.host.lookup(name)
        prepared = _Prepared()
        started = time.monotonic()
        try:
            dest_xml, persist_xml = self._prepare(guest, plan, prepared, progress)
            switched = self._run(guest, plan, opts, dest_xml, persist_xml, progress, cancel)
        except BaseException as exc:
            self._clean_up(plan, prepared, guest)
            if isinstance(exc, VirtkitError | KeyboardInterrupt):
                raise
            raise BackendError(f"migrating {name} failed: {exc}") from exc
        seconds = time.monotonic() - started
        moved = self.target.host.lookup(name)
        stats = completed_stats(moved) if plan.live else None
        log.info("migrated %s from %s to %s in %.2f s", name, self.source_name,
                 self.target_name, seconds)  # fmt: skip
        return MigrationResult(
            vm=name, source=self.source_name, target=self.target_name, live=plan.live,
            mode=plan.mode, seconds=round(seconds, 3),
            downtime_ms=stats.downtime_ms if stats and stats.known else None,
            iterations=stats.iterations if stats and stats.known else None,
            data_total=stats.data_total if stats and stats.known else None,
            switched_to_postcopy=switched, state=moved.state()[0], plan=plan,
        )  # fmt: skip

    def _prepare(
        self, guest: Guest, plan: MigrationPlan, prepared: _Prepared,
        progress: MigrateProgress | None,
    ) -> tuple[str | None, str | None]:  # fmt: skip
        """Target volumes: made empty for what the migration copies, uploaded for read-only
        media (seeds) and offline copies. The definitions with the target's paths."""
        dst = self.target.host.storage
        src = self.source.host.storage
        for move in plan.disks:
            if move.action not in ("copy", "upload") or move.pool is None:
                continue
            vol = Volume()
            vol.name = os.path.basename(move.dest)
            vol.capacity = move.capacity if move.action == "copy" else move.size
            vol.format = move.format if move.action == "copy" else "raw"
            if move.action == "upload":
                vol.capacity = move.capacity
                vol.format = move.format
            dst.create_volume(move.pool, vol.to_xml())
            prepared.volumes.append(move.dest)
            if move.action == "upload":
                source_pool = src.volume_pool_by_path(move.source)
                source_name = Volume.parse(src.volume_xml_by_path(move.source) or "").name
                assert source_pool and source_name
                self._stream(source_pool, source_name, move, progress)
        rewrites = {m.source: m.dest for m in plan.disks if m.dest != m.source}
        if not rewrites and not plan.live:
            return None, None
        mig = Migration(guest)

        def rewritten(xml: str, *, running: bool = False) -> str:
            dom = Domain.parse(xml)
            if running:
                # the boot goes on over there: its console log too (append, not start afresh,
                # where the log's directory is shared); the next boot's starts afresh again
                for serial in dom.serials:
                    if serial.log is not None and serial.log.file:
                        serial.log.append = "on"
            if dom.virtkit is not None:  # the disks virtkit made for it: their new paths
                for owned in dom.virtkit.owned_disks:
                    if owned.path in rewrites:
                        owned.path = rewrites[owned.path]
            for disk in dom.disks:
                if disk.source_file in rewrites:
                    disk.source_file = rewrites[disk.source_file]
                    if disk.backing_store is not None:  # the copy is whole: no chain below
                        disk.node.remove(disk.backing_store.node)
            return dom.to_xml()

        persistent = rewritten(mig.migratable_xml(inactive=True)) if rewrites else None
        if not plan.live:  # offline, the persistent definition is the one that moves
            return persistent, persistent
        return rewritten(mig.migratable_xml(), running=True), persistent

    def _stream(self, pool: str, name: str, move: DiskMove, progress: MigrateProgress | None
                ) -> None:  # fmt: skip
        """A volume's bytes from the source's pool into the target's (libvirt's streams,
        spooled through a temporary file here: the hosts need not reach each other's files)."""
        import tempfile

        src = self.source.host.storage
        dst = self.target.host.storage
        label = f"copying {os.path.basename(move.source)}"
        with tempfile.TemporaryFile(prefix="virtkit-migrate-") as spool:
            for chunk in src.download(pool, name):
                spool.write(chunk)
                if progress:
                    progress(label, spool.tell(), move.size or None, {})
            length = spool.tell()
            spool.seek(0)
            dst.upload(move.pool or pool, os.path.basename(move.dest), spool, length)

    def _run(
        self, guest: Guest, plan: MigrationPlan, opts: MigrateOptions, dest_xml: str | None,
        persist_xml: str | None, progress: MigrateProgress | None,
        cancel: threading.Event | None,
    ) -> bool:  # fmt: skip
        """The libvirt migration in a thread; here: progress, max downtime, post-copy switch,
        cancel and timeout. Returns whether it switched to post-copy."""
        mig = Migration(guest)
        flags = MigrateFlags(
            live=plan.live, offline=not plan.live,
            copy_storage=plan.live and any(m.action == "copy" for m in plan.disks),
            auto_converge=plan.mode == "auto-converge", postcopy=plan.mode == "postcopy",
            persist=opts.persist, undefine_source=opts.undefine_source, unsafe=opts.unsafe,
        )  # fmt: skip
        copied = [m.target for m in plan.disks if m.action == "copy"]
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                mig.migrate(self.target_uri, flags, dest_xml=dest_xml, persist_xml=persist_xml,
                            disks=copied or None, bandwidth_mib=opts.bandwidth_mib)  # fmt: skip
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run, name=f"vk-migrate-{plan.vm}", daemon=True)
        worker.start()
        started = time.monotonic()
        downtime_set = switched = aborted = False
        why_aborted = ""
        iterations: list[tuple[int, int]] = []  # (iteration, data remaining) at each poll
        try:
            while worker.is_alive():
                # quick looks until the job runs: the downtime limit goes on before the end
                worker.join(0.05 if opts.max_downtime_ms and not downtime_set else POLL)
                if not worker.is_alive() or not plan.live:
                    continue
                try:
                    now = mig.progress()
                except VirtkitError:
                    continue
                if not now.active:
                    continue
                if opts.max_downtime_ms and not downtime_set:
                    with contextlib.suppress(VirtkitError):
                        mig.set_max_downtime(opts.max_downtime_ms)
                        downtime_set = True
                if progress is not None:
                    progress("migrating", now.data_processed, now.data_total or None, {
                        "remaining": now.data_remaining, "dirty_rate": now.dirty_rate,
                        "iteration": now.iteration, "bandwidth": now.bandwidth,
                        "postcopy": switched,
                    })  # fmt: skip
                iterations.append((now.iteration, now.data_remaining))
                if flags.postcopy and not switched and now.iteration >= POSTCOPY_AFTER_ITERATIONS:
                    with contextlib.suppress(VirtkitError):
                        mig.start_postcopy()
                        switched = True
                        log.info("%s: pre-copy did not converge in %d passes: post-copy",
                                 plan.vm, now.iteration)  # fmt: skip
                if cancel is not None and cancel.is_set() and not aborted and not switched:
                    aborted, why_aborted = True, "cancelled"
                    with contextlib.suppress(VirtkitError):
                        mig.abort()
                if (opts.timeout and not aborted and not switched
                        and time.monotonic() - started > opts.timeout):  # fmt: skip
                    aborted = True
                    why_aborted = (
                        f"it did not converge within {opts.timeout:g} s (pass {now.iteration}, "
                        f"{now.data_remaining // MIB} MiB left, the guest dirtying "
                        f"{now.dirty_rate // MIB} MiB/s): try --auto"
                    )
                    with contextlib.suppress(VirtkitError):
                        mig.abort()
        except KeyboardInterrupt:
            with contextlib.suppress(VirtkitError):
                mig.abort()
            worker.join(60)
            raise Cancelled(f"migration of {plan.vm} cancelled: it stays on "
                            f"{self.source_name}") from None  # fmt: skip
        error = outcome[0] if outcome else None
        if aborted:
            kind = Cancelled if why_aborted == "cancelled" else Timeout
            raise kind(f"migration of {plan.vm} to {self.target_name} stopped: {why_aborted}; "
                       f"it stays on {self.source_name}", code="migration_aborted")  # fmt: skip
        if error is not None:
            if isinstance(error, VirtkitError):
                raise _explain(error, plan)
            raise error
        return switched

    def _clean_up(self, plan: MigrationPlan, prepared: _Prepared, guest: Guest) -> None:
        """After a failure: the VM stays (or is again) on the source; the target keeps nothing
        of this migration."""
        try:
            moved = self.target.host.guest_by_uuid(plan.uuid)
        except VirtkitError:
            moved = None
        if moved is not None:
            with contextlib.suppress(VirtkitError):
                source_state = guest.state()[0]
                if source_state in (VMState.RUNNING, VMState.PAUSED) or not plan.live:
                    log.warning("removing %s's leftover definition on %s", plan.vm,
                                self.target_name)  # fmt: skip
                    if moved.state()[0] in (VMState.RUNNING, VMState.PAUSED):
                        moved.destroy()
                    moved.undefine()
        for path in prepared.volumes:
            with contextlib.suppress(VirtkitError):
                self.target.host.storage.delete_volume_by_path(path)


def _explain(error: VirtkitError, plan: MigrationPlan) -> VirtkitError:
    text = str(error)
    if "unsafe" in text.lower():
        return InvalidInput(
            f"{text}. libvirt calls this migration unsafe (the disk's cache mode on storage it "
            "cannot tell is shared): if the storage really is shared between the hosts, add "
            "--unsafe",
            code="migration_unsafe",
        )
    return error
