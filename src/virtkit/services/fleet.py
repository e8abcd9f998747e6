"""Several hosts (``virtkit host add|list|show|remove|maintenance``, ``vm list`` across hosts).

virtkit adds no agent: each host is a libvirt URI (``qemu+ssh://``, ``qemu+tls://``,
``qemu+tcp://``, or this machine's own), kept in virtkit's store with its maintenance mode, its
placement tags and what virtkit last saw of it. Reading many hosts is concurrent, with a timeout
per host: a host that does not answer in time is reported as unreachable and never holds up the
others (its look goes on in a daemon thread, which closes its connection when it ends).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from virtkit.errors import (
    AlreadyExists,
    ConnectionFailed,
    InvalidInput,
    InvalidState,
    NotFound,
    VirtkitError,
)
from virtkit.services.store import Store, register_schema
from virtkit.specs.fleet import (
    EvacuationItem,
    EvacuationReport,
    FleetHost,
    HostStatus,
    HostVMs,
    Placement,
    PlacementCandidate,
)
from virtkit.specs.host import KvmStatus

if TYPE_CHECKING:
    import sqlite3

    from virtkit.backend.capabilities import CapabilityProbe
    from virtkit.backend.host import Host
    from virtkit.services.migrate import MigrationService
    from virtkit.services.vms import VMService
    from virtkit.settings import Settings
    from virtkit.specs.fleet import MigrateOptions


class HostClient(Protocol):
    """What the fleet needs of a client of one host (``virtkit.Client`` is one)."""

    host: Host

    @property
    def probe(self) -> CapabilityProbe: ...

    @property
    def vms(self) -> VMService: ...

    def close(self) -> None: ...


log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    name                TEXT PRIMARY KEY,
    uri                 TEXT NOT NULL UNIQUE,
    added               REAL NOT NULL,
    tags                TEXT NOT NULL DEFAULT '[]',
    maintenance         INTEGER NOT NULL DEFAULT 0,
    maintenance_since   REAL,
    maintenance_reason  TEXT,
    host_uuid           TEXT,
    migration_uri       TEXT,
    reachable           INTEGER,
    state_since         REAL,
    last_seen           REAL,
    last_error          TEXT
);
"""
register_schema(SCHEMA)

HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,62}$")
# libvirt's remote transports, this machine's own driver, and the test driver (for tests)
SCHEMES = {
    "qemu", "qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tls", "qemu+tcp", "qemu+unix",
    "test",
}  # fmt: skip
DEFAULT_TIMEOUT = 10.0
SEEN_REFRESH = 30.0  # seconds: how stale the recorded "last answer" of a host may get

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One host's answer to a concurrent look: the value, or why there is none."""

    ok: bool
    value: T | None
    error: str | None
    elapsed: float


def gather(calls: dict[str, Callable[[], T]], timeout: float) -> dict[str, Outcome[T]]:
    """Run each call in its own daemon thread and wait at most ``timeout`` seconds in all: a
    call that has not returned by then is an error ("no answer within ..."), and the caller
    goes on without it."""
    results: dict[str, Outcome[T]] = {}
    done = threading.Condition()

    def run(name: str, call: Callable[[], T]) -> None:
        start = time.monotonic()
        try:
            value = call()
            outcome: Outcome[T] = Outcome(True, value, None, time.monotonic() - start)
        except VirtkitError as exc:
            outcome = Outcome(False, None, str(exc), time.monotonic() - start)
        except Exception as exc:  # a host's failure is reported, never raised into the others
            log.debug("looking at host %s failed", name, exc_info=True)
            outcome = Outcome(False, None, f"{type(exc).__name__}: {exc}",
                              time.monotonic() - start)  # fmt: skip
        with done:
            results.setdefault(name, outcome)
            done.notify_all()

    for name, call in calls.items():
        threading.Thread(target=run, args=(name, call), name=f"vk-host-{name}", daemon=True).start()
    deadline = time.monotonic() + timeout
    with done:
        while len(results) < len(calls):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done.wait(left)
        for name in calls:
            results.setdefault(
                name, Outcome(False, None, f"no answer within {timeout:g} s", timeout)
            )
        return dict(results)


def check_uri(uri: str) -> str:
    """A libvirt URI virtkit can manage a host by, or InvalidInput naming what is wrong."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise InvalidInput(
            f"host URI {uri!r}: the scheme must be one of qemu+ssh, qemu+tls, qemu+tcp, "
            "qemu+unix, qemu+libssh, qemu+libssh2 or qemu (this machine), e.g. "
            "qemu+ssh://root@kvm1.example.com/system",
            code="invalid_uri",
        )
    if parts.scheme != "test" and parts.path not in ("/system", "/session"):
        raise InvalidInput(
            f"host URI {uri!r}: the path must be /system (or /session), e.g. "
            "qemu+tls://kvm1.example.com/system",
            code="invalid_uri",
        )
    if parts.scheme.startswith("qemu+") and parts.scheme != "qemu+unix" and not parts.hostname:
        raise InvalidInput(f"host URI {uri!r} names no host", code="invalid_uri")
    return uri


def check_name(name: str) -> str:
    if not HOST_NAME.match(name):
        raise InvalidInput(
            f"host name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            code="invalid_name",
        )
    return name


def check_tags(tags: Sequence[str]) -> list[str]:
    for tag in tags:
        if not TAG.match(tag):
            raise InvalidInput(
                f"host tag {tag!r}: letters, digits and _ . : = / - (1-63 characters)",
                code="invalid_tag",
            )
    return sorted(set(tags))


def _row(row: sqlite3.Row) -> FleetHost:
    def flag(value: int | None) -> bool | None:
        return None if value is None else bool(value)

    return FleetHost(
        name=row["name"],
        uri=row["uri"],
        added=row["added"],
        tags=json.loads(row["tags"] or "[]"),
        maintenance=bool(row["maintenance"]),
        maintenance_since=row["maintenance_since"],
        maintenance_reason=row["maintenance_reason"],
        host_uuid=row["host_uuid"],
        migration_uri=row["migration_uri"],
        reachable=flag(row["reachable"]),
        state_since=row["state_since"],
        last_seen=row["last_seen"],
        last_error=row["last_error"],
    )


class Fleet:
    """The hosts virtkit manages: a registry in the store, and concurrent looks at them."""

    def __init__(
        self, settings: Settings, store: Store, connect: Callable[[str], HostClient]
    ) -> None:
        self.settings = settings
        self.store = store
        self._connect = connect  # a client of the host at this URI (the caller's settings)
        # the looks (status, vms) keep one client per host: its connection stays open between
        # looks (a long-lived caller, the API, pays the connection once), one look at a time
        self._kept: dict[str, tuple[HostClient, threading.Lock]] = {}
        self._kept_lock = threading.Lock()

    def close(self) -> None:
        with self._kept_lock:
            kept, self._kept = self._kept, {}
        for client, lock in kept.values():
            # one still in a look that never answered (a frozen host) is left to its thread:
            # closing it would wait for that answer
            if lock.acquire(blocking=False):
                try:
                    with contextlib.suppress(Exception):
                        client.close()
                finally:
                    lock.release()

    # -- the registry ---------------------------------------------------------------------

    def hosts(self) -> list[FleetHost]:
        with self.store.db() as db:
            return [_row(r) for r in db.execute("SELECT * FROM hosts ORDER BY name")]

    def get(self, name: str) -> FleetHost:
        with self.store.db() as db:
            row = db.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = ", ".join(h.name for h in self.hosts()) or "none yet: virtkit host add"
            raise NotFound(f"no host {name!r} (hosts: {known})", code="host_not_found")
        return _row(row)

    def uri_of(self, name: str) -> str:
        return self.get(name).uri

    def add(
        self,
        name: str,
        uri: str,
        *,
        tags: Sequence[str] = (),
        check: bool = True,
        probe: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        migration_uri: str | None = None,
    ) -> HostStatus:
        """Register a host. With ``check`` (the default) it must answer first: nothing is
        stored for a host that cannot be reached (ConnectionFailed says why); with ``probe``
        its KVM verdict is decided now (a test boot there, once; kept afterwards)."""
        check_name(name)
        check_uri(uri)
        if migration_uri is not None:
            check_uri(migration_uri)
        tagged = check_tags(tags)
        for other in self.hosts():
            if other.name == name:
                raise AlreadyExists(f"host {name!r} exists ({other.uri})", code="host_exists")
            if other.uri == uri:
                raise AlreadyExists(f"{uri} is already host {other.name!r}", code="host_exists")
        now = time.time()
        record = FleetHost(name=name, uri=uri, added=now, tags=tagged)
        status: HostStatus | None = None
        if check:
            status = self._look_at(record, timeout=timeout, probe=probe)
            if not status.reachable:
                raise ConnectionFailed(
                    f"host {name!r} ({uri}) cannot be reached: {status.error}; nothing was "
                    "added (--no-check adds it anyway)",
                    code="host_unreachable",
                )
        with self.store.db() as db:
            db.execute(
                "INSERT INTO hosts (name, uri, added, tags, migration_uri) VALUES (?, ?, ?, ?, ?)",
                (name, uri, now, json.dumps(tagged), migration_uri),
            )
        if status is None:
            return HostStatus(host=self.get(name), reachable=False, error="not checked",
                              elapsed=0.0)  # fmt: skip
        self._remember(name, status.reachable, status.error, status.host.host_uuid)
        return status.model_copy(update={"host": self.get(name)})

    def remove(self, name: str) -> FleetHost:
        """Forget a host. Its VMs, disks and networks stay as they are, on it."""
        host = self.get(name)
        with self.store.db() as db:
            db.execute("DELETE FROM hosts WHERE name = ?", (name,))
        return host

    def set_maintenance(self, name: str, on: bool, reason: str | None = None) -> FleetHost:
        """Maintenance on: nothing is placed on the host (its VMs keep running until moved).
        Off: it takes VMs again."""
        host = self.get(name)
        if host.maintenance != on:
            with self.store.db() as db:
                db.execute(
                    "UPDATE hosts SET maintenance = ?, maintenance_since = ?, "
                    "maintenance_reason = ? WHERE name = ?",
                    (int(on), time.time() if on else None, reason if on else None, name),
                )
        elif on and reason and reason != host.maintenance_reason:
            with self.store.db() as db:
                db.execute("UPDATE hosts SET maintenance_reason = ? WHERE name = ?",
                           (reason, name))  # fmt: skip
        return self.get(name)

    def set_tags(self, name: str, tags: Sequence[str]) -> FleetHost:
        self.get(name)
        with self.store.db() as db:
            db.execute("UPDATE hosts SET tags = ? WHERE name = ?",
                       (json.dumps(check_tags(tags)), name))  # fmt: skip
        return self.get(name)

    def _remember(
        self, name: str, reachable: bool, error: str | None, host_uuid: str | None = None
    ) -> None:
        """What this look saw: reachable or not since when, the last answer, the host's UUID."""
        now = time.time()
        with self.store.db() as db:
            row = db.execute(
                "SELECT reachable, last_seen, last_error, host_uuid FROM hosts WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None:  # removed meanwhile
                return
            changed = row["reachable"] is None or bool(row["reachable"]) != reachable
            fresh = not reachable or now - (row["last_seen"] or 0) < SEEN_REFRESH
            if (not changed and fresh and row["last_error"] == error
                    and host_uuid in (None, row["host_uuid"])):  # fmt: skip
                return  # nothing new: no write (a look every few seconds costs no commit)
            db.execute(
                "UPDATE hosts SET reachable = ?, state_since = CASE WHEN ? THEN ? "
                "ELSE state_since END, last_seen = CASE WHEN ? THEN ? ELSE last_seen END, "
                "last_error = ?, host_uuid = COALESCE(?, host_uuid) WHERE name = ?",
                (int(reachable), changed, now, reachable, now, error, host_uuid, name),
            )  # fmt: skip

    # -- moving VMs -------------------------------------------------------------------------

    def find_vm(self, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The registered host a VM is on (all asked together)."""
        listed = self.vms(timeout=timeout)
        found = [h.host for h in listed if any(v.name == name for v in h.vms)]
        if len(found) > 1:
            raise InvalidInput(f"VM {name!r} is on several hosts ({', '.join(found)}): say "
                               f"which with NAME@HOST or --host", code="vm_ambiguous")  # fmt: skip
        if not found:
            down = [h.host for h in listed if not h.reachable]
            extra = f" (not asked: {', '.join(down)}, unreachable)" if down else ""
            raise NotFound(f"no VM {name!r} on the registered hosts{extra}",
                           code="vm_not_found")  # fmt: skip
        return found[0]

    @contextmanager
    def migration(self, source: str, target: str) -> Iterator[MigrationService]:
        """The migration service between two registered hosts (their clients closed after)."""
        from virtkit.services.migrate import MigrationService

        if source == target:
            raise InvalidInput(f"the VM is on {target} already", code="same_host")
        src, dst = self.get(source), self.get(target)
        if dst.maintenance:
            raise InvalidState(f"host {target} is in maintenance: nothing moves there",
                               code="host_in_maintenance")  # fmt: skip
        with self._client_for(src.uri) as a, self._client_for(dst.uri) as b:
            yield MigrationService(a, b, source_name=source, target_name=target,
                                   target_uri=dst.migration_uri or dst.uri)  # fmt: skip

    def evacuate(
        self,
        name: str,
        opts: MigrateOptions,
        *,
        parallel: int = 2,
        dry_run: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        report: Callable[[EvacuationItem], None] | None = None,
    ) -> EvacuationReport:
        """Maintenance on, then every VM off the host: each placed by the same rules as a new
        one (the VMs placed before it counted), moved live if it runs, offline if not, at most
        ``parallel`` at a time. A VM that cannot move is reported; the others still go."""
        source = self.get(name)
        if not dry_run:
            self.set_maintenance(name, True, source.maintenance_reason or "evacuation")
        statuses = {s.host.name: s for s in self.status(timeout=timeout)}
        listed = {h.host: h for h in self.vms(timeout=timeout)}
        if not listed[name].reachable:
            raise ConnectionFailed(f"host {name} cannot be reached: {listed[name].error}",
                                   code="host_unreachable")  # fmt: skip
        vm_tags = {h: [(v.name, list(v.tags)) for v in listed[h].vms] for h in listed}
        others = [s for n, s in statuses.items() if n != name]
        # running ones first: they are what maintenance waits for
        vms = sorted(listed[name].vms, key=lambda v: (v.state.value != "running", v.name))
        plans: list[tuple[str, Placement]] = []
        for vm in vms:
            placement = place(vm.memory, vm.vcpus, vm.tags, others, vm_tags)
            plans.append((vm.name, placement))
            if placement.host is not None:  # count it where it goes
                others = [
                    s.model_copy(update={
                        "memory_free": (s.memory_free or 0) - vm.memory,
                        "vcpus_running": (s.vcpus_running or 0)
                        + (vm.vcpus if vm.state.value == "running" else 0),
                    }) if s.host.name == placement.host else s
                    for s in others
                ]  # fmt: skip
                vm_tags.setdefault(placement.host, []).append((vm.name, list(vm.tags)))
        items: list[EvacuationItem] = []
        lock = threading.Lock()

        def done(item: EvacuationItem) -> None:
            with lock:
                items.append(item)
            if report is not None:
                report(item)

        def move(vm_name: str, target: str) -> None:
            start = time.monotonic()
            try:
                with self.migration(name, target) as service:
                    result = service.migrate(vm_name, opts)
                done(EvacuationItem(vm=vm_name, target=target, ok=True, seconds=result.seconds,
                                    detail=f"{'live' if result.live else 'offline'}, "
                                    f"{result.mode}"))  # fmt: skip
            except VirtkitError as exc:
                done(EvacuationItem(vm=vm_name, target=target, ok=False, detail=str(exc),
                                    seconds=round(time.monotonic() - start, 3)))  # fmt: skip

        todo = []
        for vm_name, placement in plans:
            if placement.host is None:
                done(EvacuationItem(vm=vm_name, target=None, ok=False,
                                    detail=placement.summary))  # fmt: skip
            elif dry_run:
                done(EvacuationItem(vm=vm_name, target=placement.host, ok=True,
                                    detail=f"would go to {placement.summary}"))  # fmt: skip
            else:
                todo.append((vm_name, placement.host))
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
                for future in [pool.submit(move, v, t) for v, t in todo]:
                    future.result()
        order = {v: i for i, (v, _p) in enumerate(plans)}
        items.sort(key=lambda i: order.get(i.vm, 0))
        return EvacuationReport(host=name, moved=sum(1 for i in items if i.ok and not dry_run),
                                failed=sum(1 for i in items if not i.ok), items=items)  # fmt: skip

    # -- looking at hosts -----------------------------------------------------------------

    def client(self, name: str) -> HostClient:
        """A client of that host (the same settings, its URI); the caller closes it."""
        return self._connect(self.uri_of(name))

    @contextmanager
    def _looking_at(self, uri: str) -> Iterator[HostClient]:
        with self._kept_lock:
            if uri not in self._kept:
                self._kept[uri] = (self._connect(uri), threading.Lock())
            client, lock = self._kept[uri]
        with lock:
            yield client

    @contextmanager
    def _client_for(self, uri: str) -> Iterator[HostClient]:
        client = self._connect(uri)
        try:
            yield client
        finally:
            client.close()

    def _select(self, names: Sequence[str] | None) -> list[FleetHost]:
        if not names:
            return self.hosts()
        return [self.get(n) for n in names]

    def status(
        self,
        names: Sequence[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        probe: bool = False,
    ) -> list[HostStatus]:
        """Each host now, looked at concurrently, at most ``timeout`` seconds in all. The KVM
        verdict is the known one unless ``probe`` (which may boot a test VM there)."""
        hosts = self._select(names)
        answers = gather(
            {h.name: (lambda h=h: self._facts(h, probe=probe)) for h in hosts},  # type: ignore[misc]
            timeout,
        )
        result = []
        for h in hosts:
            got = answers[h.name]
            if got.ok and got.value is not None:
                status = got.value.model_copy(update={"elapsed": got.elapsed})
            else:
                status = HostStatus(host=h, reachable=False, error=got.error, elapsed=got.elapsed)
            self._remember(h.name, status.reachable, status.error, status.host.host_uuid)
            result.append(status.model_copy(update={"host": self.get(h.name)}))
        return result

    def _look_at(self, host: FleetHost, *, timeout: float, probe: bool) -> HostStatus:
        got = gather({host.name: lambda: self._facts(host, probe=probe)}, timeout)[host.name]
        if got.ok and got.value is not None:
            return got.value.model_copy(update={"elapsed": got.elapsed})
        return HostStatus(host=host, reachable=False, error=got.error, elapsed=got.elapsed)

    def _facts(self, host: FleetHost, *, probe: bool) -> HostStatus:
        with self._looking_at(host.uri) as vk:
            h = vk.host
            caps = vk.probe.capabilities()
            rows = h.domain_rows()
            running = [r for r in rows if r.state.value == "running"]
            total, free = h.memory()
            sharing = h.memory_parameters().get("shm_pages_sharing")
            verdict = (vk.probe.kvm_verdict(caps, caps.host_arch or "x86_64") if probe
                       else vk.probe.known_kvm_verdict(caps.host_arch or "x86_64"))  # fmt: skip
            _driver, qemu = h.hypervisor()
            node = h.node_info()
            return HostStatus(
                host=host.model_copy(update={"host_uuid": caps.host_uuid}),
                reachable=True,
                elapsed=0.0,
                hostname=h.hostname(),
                libvirt_version=h.libvirt_version(),
                hypervisor_version=qemu,
                cpu_model=caps.cpu_model,
                cpus=node.cpus,
                memory_total=total,
                memory_free=free,
                vms_running=len(running),
                vms_total=len(rows),
                vcpus_running=sum(r.vcpus for r in running),
                ksm_saved=None if sharing is None else sharing * 4096,
                kvm=None
                if verdict is None
                else KvmStatus(
                    usable=verdict.usable,
                    reason=verdict.reason,
                    checked_at=verdict.checked_at,
                    cached=verdict.cached,
                    fix=verdict.fix,
                ),
            )

    def vms(
        self,
        names: Sequence[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        refresh: bool = False,
    ) -> list[HostVMs]:
        """Every host's VMs, collected concurrently; a host that fails or does not answer
        within ``timeout`` is listed as unreachable, with why, and the others are complete."""
        hosts = self._select(names)

        def listing(h: FleetHost) -> list[object]:
            with self._looking_at(h.uri) as vk:
                return list(vk.vms.list(refresh=refresh))

        answers = gather({h.name: (lambda h=h: listing(h)) for h in hosts}, timeout)  # type: ignore[misc]
        result = []
        for h in hosts:
            got = answers[h.name]
            self._remember(h.name, got.ok, got.error)
            result.append(
                HostVMs(
                    host=h.name,
                    uri=h.uri,
                    reachable=got.ok,
                    error=got.error,
                    elapsed=got.elapsed,
                    vms=got.value or [],
                )
            )
        return result

    def place(
        self,
        memory: int,
        vcpus: int,
        tags: Sequence[str] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Placement:
        """Where a new VM goes: every registered host looked at now (with its VMs' tags), then
        ``place`` (below) decides; nothing is created."""
        statuses = self.status(timeout=timeout)
        listed = self.vms([s.host.name for s in statuses if s.reachable], timeout=timeout)
        vm_tags = {h.host: [(v.name, list(v.tags)) for v in h.vms] for h in listed}
        unanswered = {h.host: h.error for h in listed if not h.reachable}
        if unanswered:  # answered the first look, not the second: not a candidate now
            statuses = [
                s.model_copy(update={"reachable": False, "error": unanswered[s.host.name]})
                if s.host.name in unanswered
                else s
                for s in statuses
            ]
        return place(memory, vcpus, tags, statuses, vm_tags)


# -- placement -------------------------------------------------------------------------------

# Placement rules are VM tags: ``place=T`` (only on hosts tagged T), ``apart=G`` (never on a host
# running another VM tagged apart=G: anti-affinity), ``together=G`` (on the host that runs the
# VMs tagged together=G: affinity).
PLACE, APART, TOGETHER = "place=", "apart=", "together="
# memory a host keeps for itself and QEMU's own overhead beyond the guest's RAM
HOST_RESERVE = 256 * 1024 * 1024
VCPU_WEIGHT = 0.25


def _rule_values(tags: Sequence[str], prefix: str) -> list[str]:
    return [t[len(prefix) :] for t in tags if t.startswith(prefix) and len(t) > len(prefix)]


def place(
    memory: int,
    vcpus: int,
    tags: Sequence[str],
    statuses: Sequence[HostStatus],
    vm_tags: dict[str, list[tuple[str, list[str]]]],
) -> Placement:
    """Choose a host for a VM of ``memory`` bytes and ``vcpus``, tagged ``tags``, among
    ``statuses`` (each host now) with ``vm_tags`` (each host's VMs: name and tags). Pure: every
    host's verdict comes with its reasons, and the best score wins."""
    from virtkit.specs import format_size

    wanted = _rule_values(tags, PLACE)
    apart = set(_rule_values(tags, APART))
    together = set(_rule_values(tags, TOGETHER))
    # where the VMs this one must join run
    joined = {
        host
        for host, vms in vm_tags.items()
        for _name, their in vms
        if together & set(_rule_values(their, TOGETHER))
    }
    candidates = []
    for s in statuses:
        h = s.host
        why: list[str] = []
        if not s.reachable:
            why.append(f"unreachable: {s.error}")
        if h.maintenance:
            why.append("in maintenance" + (f" ({h.maintenance_reason})" if h.maintenance_reason
                                           else ""))  # fmt: skip
        missing = [t for t in wanted if t not in h.tags]
        if missing:
            why.append(f"lacks tag {', '.join(missing)} (place=)")
        clash = sorted(
            name
            for name, their in vm_tags.get(h.name, [])
            if apart & set(_rule_values(their, APART))
        )
        if clash:
            why.append(f"runs {', '.join(clash)} (apart={', '.join(sorted(apart))})")
        if joined and h.name not in joined:
            why.append(f"the VMs tagged together={', '.join(sorted(together))} run on "
                       f"{', '.join(sorted(joined))}")  # fmt: skip
        free_after = load_after = score = None
        if s.reachable and s.memory_free is not None:
            free_after = s.memory_free - memory - HOST_RESERVE
            if free_after < 0:
                why.append(f"needs {format_size(memory)} (+{format_size(HOST_RESERVE)} kept), "
                           f"has {format_size(s.memory_free)} free")  # fmt: skip
            cpus = max(1, s.cpus or 1)
            load_after = ((s.vcpus_running or 0) + vcpus) / cpus
            total = max(1, s.memory_total or 1)
            score = round(max(free_after, 0) / total - VCPU_WEIGHT * load_after, 4)
        ok = not why
        if ok:
            ksm = f", KSM saves {format_size(s.ksm_saved)} there" if s.ksm_saved else ""
            why.append(
                f"{format_size(max(free_after or 0, 0))} free after{ksm}; "
                f"{load_after:.2f} vCPUs per CPU after; score {score}"
            )
        candidates.append(
            PlacementCandidate(
                host=h.name, eligible=ok, reasons=why, memory_free=s.memory_free,
                memory_free_after=free_after, vcpu_load_after=load_after, score=score,
            )
        )  # fmt: skip
    eligible = [c for c in candidates if c.eligible]
    eligible.sort(key=lambda c: (-(c.score or 0.0), c.host))
    candidates.sort(key=lambda c: (not c.eligible, -(c.score or 0.0), c.host))
    if not eligible:
        summary = (
            f"no host can take a VM of {format_size(memory)} and {vcpus} vCPU: "
            + "; ".join(f"{c.host}: {', '.join(c.reasons)}" for c in candidates)
            if candidates
            else "no hosts registered (virtkit host add)"
        )
        return Placement(host=None, memory=memory, vcpus=vcpus, tags=list(tags),
                         summary=summary, candidates=candidates)  # fmt: skip
    best = eligible[0]
    chosen = next(s for s in statuses if s.host.name == best.host)
    return Placement(
        host=best.host, uri=chosen.host.uri, memory=memory, vcpus=vcpus, tags=list(tags),
        summary=f"{best.host}: {best.reasons[0]}", candidates=candidates,
    )  # fmt: skip
