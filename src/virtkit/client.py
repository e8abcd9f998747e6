"""The public entry to virtkit as a library: ``virtkit.Client``.

>>> import virtkit
>>> with virtkit.Client("qemu:///system") as vk:
...     for vm in vk.vms.list():
...         print(vm.name, vm.state)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from virtkit.backend.connection import Connection
from virtkit.backend.events import DomainEvent
from virtkit.backend.host import Host, LibvirtHost
from virtkit.settings import Settings

# Services are imported when first used: a CLI command pays only for what it runs.
if TYPE_CHECKING:
    from virtkit.backend.capabilities import CapabilityProbe
    from virtkit.doctor.bundle import DiagService
    from virtkit.doctor.service import DoctorService
    from virtkit.ksm.service import KsmService
    from virtkit.metrics.collector import HostCollector
    from virtkit.services.access import AccessService
    from virtkit.services.audit import AuditLog
    from virtkit.services.backup import BackupService
    from virtkit.services.consoles import ConsoleService
    from virtkit.services.disks import DiskService
    from virtkit.services.eventfeed import EventFeed
    from virtkit.services.fleet import Fleet
    from virtkit.services.graphics import GraphicsService
    from virtkit.services.host import HostService
    from virtkit.services.images import ImageService
    from virtkit.services.inventory import InventoryService
    from virtkit.services.networks import NetworkService
    from virtkit.services.nics import NicService
    from virtkit.services.pools import PoolService
    from virtkit.services.site import SiteService
    from virtkit.services.sitestate import SiteHost
    from virtkit.services.snapshots import SnapshotService
    from virtkit.services.store import Store
    from virtkit.services.tinyguest import TinyGuest
    from virtkit.services.users import UserService
    from virtkit.services.vms import VMService
    from virtkit.tuning.service import TuningService


class Client:
    """One libvirt host and the services that act on it. Connects on first use."""

    def __init__(
        self, uri: str | None = None, *, settings: Settings | None = None, host: Host | None = None
    ) -> None:
        # A library reads no environment: pass Settings.load() to get the CLI's configuration.
        self.settings = settings or Settings()
        if uri is not None:
            self.settings = self.settings.model_copy(update={"uri": uri})
        self.connection = Connection(self.settings.uri)
        # ``host`` lets tests put a fault-injecting wrapper at the seam.
        self.host: Host = host if host is not None else LibvirtHost(self.connection)
        self._others: dict[str, Client] = {}  # clients of a site's other hosts

    @property
    def uri(self) -> str:
        return self.settings.uri

    @cached_property
    def probe(self) -> CapabilityProbe:
        from virtkit.backend.capabilities import CapabilityProbe

        s = self.settings
        return CapabilityProbe(
            self.host,
            cache_dir=s.cache_dir,
            probe_kernel=s.kvm_probe_kernel,
            probe_timeout=s.kvm_probe_timeout,
        )

    @cached_property
    def vms(self) -> VMService:
        from virtkit.services.vmmeta import MetadataCache
        from virtkit.services.vms import VMService

        s = self.settings
        return VMService(
            self.host,
            self.probe,
            pools=lambda: self.pools,
            images=lambda: self.images,
            storage_pool=s.storage_pool,
            storage_pool_path=s.storage_pool_path,
            console_log_dir=s.console_log_dir,
            meta=MetadataCache(
                self.host,
                self.store,
                subscribe=self.connection.subscribe,
                generation=lambda: self.connection.generation,
            ),
        )

    @cached_property
    def fleet(self) -> Fleet:
        """The hosts virtkit manages (``host add``): their registry, each one now, and the VMs
        of all of them, read concurrently with a timeout per host."""
        from virtkit.services.fleet import Fleet

        return Fleet(self.settings, self.store, self.for_uri)

    def for_uri(self, uri: str) -> Client:
        """A new client of another host: these settings with its URI (the caller closes it)."""
        return Client(settings=self.settings.model_copy(update={"uri": uri}))

    @cached_property
    def backups(self) -> BackupService:
        """Backup sets of VMs: create (full, incremental), list, verify, restore, prune,
        schedules."""
        from virtkit.services.backup import BackupService

        def tags_of() -> dict[str, list[str]]:
            return {vm.name: list(vm.tags) for vm in self.vms.list()}

        return BackupService(
            self.host,
            self.store,
            self.vms.files,
            self.settings.backup_path,
            host_uuid=self._host_uuid,
            tags_of=tags_of,
        )

    @cached_property
    def metrics(self) -> HostCollector:
        """One metrics scrape of this host after another (the exporter's and /metrics')."""
        from virtkit.metrics.collector import HostCollector

        return HostCollector(
            self.host, self.vms.meta, self.probe.kvm_verdict, subscribe=self.connection.subscribe
        )

    @cached_property
    def pools(self) -> PoolService:
        """Storage pools and volumes."""
        from virtkit.services.pools import PoolService

        return PoolService(self.host, self.store, host_uuid=self._host_uuid)

    def _host_uuid(self) -> str:
        return self.probe.capabilities().host_uuid or self.uri

    @cached_property
    def snapshots(self) -> SnapshotService:
        """A VM's snapshots (internal and external), and its disks' backing chains."""
        from virtkit.services.snapshots import SnapshotService

        return SnapshotService(self.host, self.vms.files)

    @cached_property
    def disks(self) -> DiskService:
        """A VM's disks and CD-ROMs after creation (hot-plug)."""
        from virtkit.services.disks import DiskService

        return DiskService(self.host, self.vms)

    @cached_property
    def networks(self) -> NetworkService:
        """Virtual networks: create, start, stop, delete, DHCP reservations, DNS entries."""
        from virtkit.services.networks import NetworkService

        return NetworkService(self.host)

    @cached_property
    def nics(self) -> NicService:
        """A VM's NICs (hot-plug, link state) and its IP addresses."""
        from virtkit.services.nics import NicService

        return NicService(self.host)

    @cached_property
    def access(self) -> AccessService:
        """Wait for a guest (boot, cloud-init, SSH) and find its SSH server."""
        from virtkit.services.access import AccessService

        return AccessService(self.host, self.nics, self.vms.files)

    @cached_property
    def inventory(self) -> InventoryService:
        """The Ansible inventory of this host's VMs (``virtkit inventory``, docs/ansible.md)."""
        from virtkit.services.inventory import InventoryService

        def template_os() -> dict[str, str]:
            rows = self.store.images(self._host_uuid(), templates_only=True)
            return {f"{r['pool']}/{r['name']}": r["os"] for r in rows if r["os"]}

        return InventoryService(
            self.host,
            self.vms,
            self.nics,
            self.settings.cache_dir / "ansible" / "known_hosts",
            template_os,
        )

    @cached_property
    def ksm(self) -> KsmService:
        """Kernel samepage merging on this host (local hosts only)."""
        from virtkit.ksm.service import KsmService
        from virtkit.ksm.sysfs import KsmSysfs

        s = self.settings
        return KsmService(
            self.host,
            KsmSysfs(s.ksm_root),
            history_path=s.ksm_history_path,
            history_days=s.ksm_history_days,
        )

    @cached_property
    def tuning(self) -> TuningService:
        """The tuning advisor: per-VM profiles (latency, throughput, density) and the host's."""
        from virtkit.tuning.service import TuningService

        return TuningService(self.host)

    @cached_property
    def store(self) -> Store:
        from virtkit.services.store import Store

        return Store(self.settings.state_dir / "virtkit.db")

    @cached_property
    def images(self) -> ImageService:
        """Image import and templates."""
        from virtkit.services.images import ImageService

        return ImageService(
            self.host,
            self.pools,
            self.store,
            self.settings.cache_dir / "work",
            host_uuid=self._host_uuid,
            build_root=self.settings.cache_dir,
            default_pool=(self.settings.storage_pool, self.settings.storage_pool_path),
        )

    @cached_property
    def hosts(self) -> HostService:
        from virtkit.services.host import HostService

        return HostService(self.host, self.probe)

    @cached_property
    def doctor(self) -> DoctorService:
        """Host and VM checks (``virtkit doctor``) and their safe fixes."""
        from virtkit.doctor.service import DoctorService

        return DoctorService(
            self.host,
            self.probe,
            pools=self.pools.list_pools,
            addresses=self.nics.ip,
            console_answers=self.consoles.answers,
            qemu_log_dir=self.settings.qemu_log_dir,
        )

    @cached_property
    def diag(self) -> DiagService:
        """Diagnostics bundles (``virtkit diag bundle``): facts, reports, XML, logs; redacted."""
        from virtkit.doctor.bundle import DiagService
        from virtkit.services.vmseed import describe

        s = self.settings
        return DiagService(
            self.host,
            host_info=self.hosts.info,
            host_report=lambda: self.doctor.host_report(),
            vm_report=lambda name: self.doctor.vm_report(name),
            seed_view=lambda name: describe(self.host, self.pools, name),
            store=self.store,
            qemu_log_dir=s.qemu_log_dir,
            console_log_dir=s.console_log_dir,
        )

    @cached_property
    def consoles(self) -> ConsoleService:
        from virtkit.services.consoles import ConsoleService

        return ConsoleService(self.host)

    @cached_property
    def graphics(self) -> GraphicsService:
        from virtkit.services.graphics import GraphicsService

        return GraphicsService(self.host)

    def tiny_guest(self, kernel: str | None = None) -> TinyGuest:
        """Build (or reuse from the cache directory) the tiny busybox test guest; no libvirt."""
        from virtkit.services.tinyguest import build_tiny_guest

        return build_tiny_guest(self.settings.cache_dir, kernel=kernel)

    def subscribe(self, callback: Any) -> Any:
        """Receive every :class:`DomainEvent` (lifecycle, metadata, job, block-job, migration,
        io-error: see ``event.kind``); returns an unsubscribe function."""
        return self.connection.subscribe(callback)

    @cached_property
    def sites(self) -> SiteService:
        """A site as code: ``plan``, ``apply`` and ``drift`` of a site file over its hosts."""
        from virtkit.services.site import SiteService

        return SiteService(self._site_hosts)

    def _site_hosts(self, site: Any) -> dict[str, SiteHost]:
        """The site's hosts as sessions: this client for its own URI (and for a site that
        names no host), another client (the same settings, that URI) for each other host."""
        from virtkit.services.sitestate import SiteHost

        def session(name: str, client: Client) -> SiteHost:
            return SiteHost(
                name=name,
                uri=client.uri,
                vms=client.vms,
                pools=client.pools,
                networks=client.networks,
                images=client.images,
                nics=client.nics,
                disks=client.disks,
                store=client.store,
                host_uuid=client._host_uuid,
                storage_pool=client.settings.storage_pool,
            )

        if not site.hosts:
            return {site.default_host: session(site.default_host, self)}
        out = {}
        for host in site.hosts:
            if host.uri == self.uri:
                out[host.name] = session(host.name, self)
                continue
            if host.uri not in self._others:
                settings = self.settings.model_copy(update={"uri": host.uri})
                self._others[host.uri] = Client(settings=settings)
            out[host.name] = session(host.name, self._others[host.uri])
        return out

    def close(self) -> None:
        if "metrics" in self.__dict__:  # made: its threads and event subscription go too
            self.metrics.close()
        if "fleet" in self.__dict__:  # the connections it keeps to the other hosts
            self.fleet.close()
        for other in self._others.values():
            other.close()
        self._others.clear()
        self.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @cached_property
    def users(self) -> UserService:
        """Users of the API and web UI: passwords, roles, API tokens, browser sessions."""
        from virtkit.extras import require

        # argon2-cffi comes with the api extra: without it, say so rather than ImportError.
        require("argon2", "users and passwords")
        from virtkit.services.users import UserService

        return UserService(self.store)

    @cached_property
    def audit(self) -> AuditLog:
        """Who changed what, from the CLI and the API."""
        from virtkit.services.audit import AuditLog

        return AuditLog(self.store)


def follow_events(
    clients: Sequence[Client],
    *,
    kinds: Iterable[str] = (),
    vms: Iterable[str] = (),
    watch_interval: float | None = None,
) -> EventFeed:
    """The domain events of every client's host as one stream (``virtkit events``):
    ``feed.start()``, then ``feed.get(timeout)`` until done, then ``feed.close()``."""
    from virtkit.services.eventfeed import WATCH_INTERVAL, EventFeed

    return EventFeed(
        [c.host for c in clients],
        kinds=kinds,
        vms=vms,
        watch_interval=WATCH_INTERVAL if watch_interval is None else watch_interval,
    )


__all__ = ["Client", "DomainEvent", "follow_events"]
