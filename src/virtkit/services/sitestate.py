"""What a site's hosts have now, read for ``virtkit plan|apply|drift``: per host one bulk VM
listing (with the metadata copy that marks a VM as managed by a site, and its spec's
digests), the pools' and networks' definitions, the templates, and which pools, networks and
templates a site manages (virtkit's store: libvirt 9.0 keeps no metadata on them)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from virtkit.errors import VirtkitError
from virtkit.services.disks import DiskService
from virtkit.services.images import ImageService
from virtkit.services.networks import NetworkService
from virtkit.services.nics import NicService
from virtkit.services.pools import PoolService
from virtkit.services.store import Store, register_schema
from virtkit.services.vmmeta import VMMeta
from virtkit.services.vms import VMService
from virtkit.specs import NetworkInfo, VMSummary
from virtkit.xml.storage import Pool

SCHEMA = """
CREATE TABLE IF NOT EXISTS site_resources (
    host_uuid   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    site        TEXT NOT NULL,
    PRIMARY KEY (host_uuid, kind, name)
);
"""
register_schema(SCHEMA)


class SiteMarks:
    """Which pools, networks and templates of a host a site manages."""

    def __init__(self, store: Store, host_uuid: Callable[[], str]) -> None:
        self.store = store
        self.host_uuid = host_uuid

    def all(self) -> dict[tuple[str, str], str]:
        with self.store.db() as db:
            rows: list[sqlite3.Row] = db.execute(
                "SELECT kind, name, site FROM site_resources WHERE host_uuid = ?",
                (self.host_uuid(),),
            ).fetchall()
        return {(r["kind"], r["name"]): r["site"] for r in rows}

    def mark(self, kind: str, name: str, site: str) -> None:
        with self.store.db() as db:
            db.execute(
                "INSERT OR REPLACE INTO site_resources (host_uuid, kind, name, site) "
                "VALUES (?, ?, ?, ?)",
                (self.host_uuid(), kind, name, site),
            )

    def forget(self, kind: str, name: str) -> None:
        with self.store.db() as db:
            db.execute(
                "DELETE FROM site_resources WHERE host_uuid = ? AND kind = ? AND name = ?",
                (self.host_uuid(), kind, name),
            )


@dataclass
class SiteHost:
    """One host of a site: its name in the file, and the services that act on it."""

    name: str
    uri: str
    vms: VMService
    pools: PoolService
    networks: NetworkService
    images: ImageService
    nics: NicService
    disks: DiskService
    store: Store
    host_uuid: Callable[[], str]
    storage_pool: str

    @property
    def marks(self) -> SiteMarks:
        return SiteMarks(self.store, self.host_uuid)


@dataclass(frozen=True)
class PoolNow:
    type: str | None
    path: str | None
    active: bool
    autostart: bool


@dataclass
class HostNow:
    vms: dict[str, tuple[VMSummary, VMMeta]] = field(default_factory=dict)
    pools: dict[str, PoolNow] = field(default_factory=dict)
    networks: dict[str, NetworkInfo] = field(default_factory=dict)
    templates: set[tuple[str, str]] = field(default_factory=set)  # (pool, name)
    marks: dict[tuple[str, str], str] = field(default_factory=dict)


def read_host(host: SiteHost) -> HostNow:
    """One host's state: a handful of calls whatever the number of VMs."""
    now = HostNow()
    now.vms = {s.name: (s, m) for s, m in host.vms.list_with_meta()}
    storage = host.pools.storage
    for name in storage.pool_names():
        xml = storage.pool_xml(name)
        if xml is None:
            continue
        pool = Pool.parse(xml)
        active, autostart, _persistent = storage.pool_state(name)
        now.pools[name] = PoolNow(pool.type, pool.target_path, active, autostart)
    for info in host.networks.list():
        now.networks[info.name] = info
    now.templates = {
        (row["pool"], row["name"])
        for row in host.store.images(host.host_uuid(), templates_only=True)
    }
    now.marks = host.marks.all()
    return now


def read_hosts(hosts: dict[str, SiteHost]) -> dict[str, HostNow]:
    """Every host's state, read side by side; a host that cannot be read is an error naming
    it (a plan over part of a site would show wrong deletions)."""
    names = sorted(hosts)
    if len(names) == 1:
        return {names[0]: _read_one(names[0], hosts[names[0]])}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        futures = {name: pool.submit(_read_one, name, hosts[name]) for name in names}
        return {name: future.result() for name, future in futures.items()}


def _read_one(name: str, host: SiteHost) -> HostNow:
    try:
        return read_host(host)
    except VirtkitError as exc:
        raise VirtkitError(
            f"host {name} ({host.uri}): {exc.message}", code=exc.code, expected=exc.expected
        ) from exc
