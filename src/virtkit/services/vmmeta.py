"""What a VM listing shows of virtkit's own metadata (tags, made by virtkit, owner, template,
the managing site and its spec digests; for the Ansible inventory the cloud-init user and the
pinned SSH host keys), without reading each domain's XML.

libvirt has no bulk call for ``<metadata>``, and one call per domain costs about ten times
the whole bulk stats call. So the listing reads a copy: in memory, kept right by libvirt's
events (a redefinition or a metadata change by any client, virsh too, marks the domain's copy
stale), else virtkit's store (a copy per domain UUID, shared by every virtkit process), else
one small metadata call for that domain, whose answer is then kept. A new domain, even one
redefined under a known name, has a new UUID and so is read afresh.

What no copy can see: another tool rewriting virtkit's own metadata element in place while
no virtkit process listens. ``vm show`` (which reads the whole definition anyway) and
``vm list --refresh`` bring the copy up to date.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from virtkit.backend.events import DomainEvent
from virtkit.backend.host import Host
from virtkit.errors import NotFound
from virtkit.services.store import Store, VMMetaRow
from virtkit.xml.base import VIRTKIT_NS
from virtkit.xml.domain import Domain, VirtkitMetadata

log = logging.getLogger(__name__)

# Events after which a domain's metadata may differ.
_CHANGES = frozenset({"defined", "undefined", "metadata-changed"})


@dataclass(frozen=True)
class VMMeta:
    tags: tuple[str, ...] = ()
    virtkit: bool = False
    owner: str | None = None
    template: str | None = None  # POOL/NAME it was made from
    site: str | None = None  # the site that manages it (`virtkit apply`)
    site_spec: str | None = None  # digest of the site's spec it was made or last changed from
    login_user: str | None = None  # the user cloud-init made
    host_keys: tuple[str, ...] = ()  # the public SSH host keys virtkit made and pinned

    @classmethod
    def of(cls, meta: VirtkitMetadata | None) -> VMMeta:
        if meta is None:
            return cls()
        return cls(
            tuple(t.name for t in meta.tags if t.name),
            True,
            meta.owner or None,
            meta.template or None,
            meta.site or None,
            meta.site_spec or None,
            meta.login_user or None,
            tuple(meta.pinned_host_keys),
        )

    @classmethod
    def of_domain(cls, dom: Domain) -> VMMeta:
        return cls.of(dom.virtkit)

    @classmethod
    def of_element(cls, xml: str) -> VMMeta:
        """From libvirt's answer for virtkit's namespace: the element, its namespace dropped."""
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            log.warning("unreadable virtkit metadata: %.80s", xml)
            return cls()
        texts = [(el.text or "").strip() for el in root.iter() if _local(el.tag) == "tag"]
        tags = [t for t in texts if t]

        def first(element: str, attribute: str) -> str | None:
            found = (el.get(attribute) for el in root.iter() if _local(el.tag) == element)
            return next((v for v in found if v), None)

        keys = [(el.text or "").strip() for el in root.iter() if _local(el.tag) == "host-key"]
        return cls(
            tuple(tags),
            True,
            first("owner", "user"),
            first("template", "name"),
            first("site", "name"),
            first("site", "spec"),
            first("cloud-init", "user"),
            tuple(k for k in keys if k),
        )

    def row(self) -> VMMetaRow:
        """As the store keeps it."""
        extra = {
            "site": self.site,
            "site_spec": self.site_spec,
            "login_user": self.login_user,
            "host_keys": list(self.host_keys),
        }
        return (list(self.tags), self.virtkit, self.owner, self.template, extra)

    @classmethod
    def of_row(cls, row: VMMetaRow) -> VMMeta:
        tags, virtkit, owner, template, extra = row
        return cls(
            tuple(tags),
            virtkit,
            owner,
            template,
            extra.get("site"),
            extra.get("site_spec"),
            extra.get("login_user"),
            tuple(extra.get("host_keys") or ()),
        )


class _Listed(Protocol):
    """A listed domain: a bulk listing's row, or a metrics scrape's stats."""

    @property
    def uuid(self) -> str: ...


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class MetadataCache:
    def __init__(
        self,
        host: Host,
        store: Store | None,
        *,
        subscribe: Callable[[Callable[[DomainEvent], None]], object] | None = None,
        generation: Callable[[], int] | None = None,
    ) -> None:
        self.host = host
        self.store = store
        self._subscribe = subscribe
        self._generation = generation
        self._seen_generation = -1
        self._subscribed = False
        self._memory: dict[str, VMMeta] = {}
        self._stale: set[str] = set()
        self._lock = threading.Lock()

    def _on_event(self, event: DomainEvent) -> None:  # libvirt's event thread
        if event.event in _CHANGES:
            with self._lock:
                self._stale.add(event.uuid)

    def _sync(self) -> set[str]:
        """Subscribe once; drop what a reconnect may have missed; the UUIDs events marked."""
        if not self._subscribed and self._subscribe is not None:
            self._subscribe(self._on_event)
            self._subscribed = True
        generation = self._generation() if self._generation else 0
        with self._lock:
            if generation != self._seen_generation:
                self._seen_generation = generation
                self._memory.clear()
            stale, self._stale = self._stale, set()
        for uuid in stale:
            self._memory.pop(uuid, None)
        return stale

    def lookup(self, rows: Sequence[_Listed], *, refresh: bool = False) -> dict[str, VMMeta]:
        """UUID -> metadata for these rows; ``refresh`` reads every domain afresh."""
        stale = self._sync()
        if refresh:
            self._memory.clear()
        need = [r.uuid for r in rows if r.uuid not in self._memory]
        if need and self.store is not None and not refresh:
            kept = self.store.vm_meta([u for u in need if u not in stale])
            for uuid, row in kept.items():
                self._memory[uuid] = VMMeta.of_row(row)
            need = [u for u in need if u not in self._memory]
        fresh: dict[str, VMMeta] = {}
        for uuid in need:
            try:
                xml = self.host.guest_by_uuid(uuid).metadata_xml(VIRTKIT_NS)
            except NotFound:
                continue  # undefined while we listed
            fresh[uuid] = VMMeta.of_element(xml) if xml else VMMeta()
        self._memory.update(fresh)
        if fresh and self.store is not None:
            self.store.put_vm_meta({u: m.row() for u, m in fresh.items()})
        return {r.uuid: self._memory.get(r.uuid, VMMeta()) for r in rows}

    def update(self, uuid: str, meta: VMMeta) -> None:
        """What a full read of the definition found (``vm show``): keep it if it differs."""
        if self._memory.get(uuid) == meta:
            return
        self._memory[uuid] = meta
        if self.store is not None:
            self.store.put_vm_meta({uuid: meta.row()})
