"""From a site file and what its hosts have now to the steps that make them match (``plan``).

Pure functions over the state ``sitestate.read_hosts`` read, except for the VMs whose spec
digest changed: only for those is the definition read (their NICs and disks), so that a plan
over hundreds of VMs costs about one bulk listing per host.

A VM records, in virtkit's metadata, the site that manages it and digests of four parts of
the spec it was made or last changed from (``r`` what only a new VM can change: image,
cloud-init, boot, CPU model, ...; ``n`` its NICs on networks, bridges and host interfaces;
``d`` its disks and their count; ``s`` its vCPUs, their maximum and memory). Tags, autostart
and the state are compared with the listing itself. vCPUs and memory go by the digest: a
running VM's listing shows what it runs with, which a change for its next start (or a guest
without a balloon driver) leaves as it was; ``drift`` compares them with the definition, so
a change made with virsh shows there.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from virtkit.errors import VirtkitError
from virtkit.services.sitestate import HostNow, SiteHost
from virtkit.services.vmmeta import VMMeta
from virtkit.specs import NicSpec, VMSpec, VMSummary, format_size
from virtkit.specs.site import (
    LISTED_FIELDS,
    Change,
    Plan,
    Site,
    SiteNetwork,
    SitePool,
    SiteTemplate,
    Unmanaged,
)

KIND_ORDER = {"pool": 0, "network": 1, "template": 2, "vm": 3}


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _nic_key(nic: NicSpec) -> dict[str, Any]:
    return nic.model_dump(mode="json")


def spec_parts(spec: VMSpec) -> dict[str, str]:
    """The four digests a VM records (see the module docstring)."""
    data = spec.model_dump(
        mode="json", exclude={"name", "vcpus", "max_vcpus", "memory", *LISTED_FIELDS}
    )
    nics = [n for n in spec.nics if not n.user]
    data["nics"] = [_nic_key(n) for n in spec.nics if n.user]  # user-mode: only a new VM
    data.pop("disks")
    return {
        "r": _digest(data),
        "n": _digest([_nic_key(n) for n in nics]),
        "d": _digest([d.model_dump(mode="json") for d in spec.disks]) + f".{len(spec.disks)}",
        "s": _digest([spec.vcpus, spec.max_vcpus, spec.memory]),
    }


def encode_parts(parts: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(parts.items()))


def decode_parts(text: str | None) -> dict[str, str]:
    out = {}
    for item in (text or "").split(","):
        key, _, value = item.partition("=")
        if key and value:
            out[key] = value
    return out


@dataclass
class Want:
    """One resource of the file, on its host."""

    kind: str
    name: str
    host: str
    spec: Any  # SitePool | SiteNetwork | SiteTemplate | VMSpec
    state: str = "running"  # VMs
    after: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, host)
    parts: dict[str, str] = field(default_factory=dict)  # VMs: the spec's digests

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.name, self.host)


@dataclass
class Step:
    """One change of the plan, with what apply needs to make it."""

    change: Change
    want: Want | None = None
    actions: list[tuple[str, Any]] = field(default_factory=list)  # VM updates: (what, value)
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        c = self.change
        return (c.kind, c.name, c.host)


def wanted(site: Site) -> list[Want]:
    """Every resource of the file, replicas expanded, with what each waits for."""
    default = site.default_host
    out: list[Want] = []
    pools = [Want("pool", p.name, p.host or default, p) for p in site.pools]
    nets = [Want("network", n.name, n.host or default, n) for n in site.networks]
    templates = [Want("template", t.name, t.host or default, t) for t in site.templates]
    for t in templates:
        t.after = [p.key for p in pools if p.host == t.host and p.name == t.spec.pool]
    out += pools + nets + templates
    instances: dict[str, list[tuple[str, str]]] = {}
    for vm in site.vms:
        instances[vm.name] = vm.instances(default)
        for name, host in instances[vm.name]:
            instances.setdefault(name, [(name, host)])
    for vm in site.vms:
        replicas = vm.instances(default)
        # one spec and one set of digests an entry: replicas differ in their name only, and
        # the digests leave the name out (a plan of hundreds of VMs stays a listing's cost)
        base = vm.instance_spec(replicas[0][0])
        parts = spec_parts(base)
        for name, host in replicas:
            spec = base if name == base.name else base.model_copy(update={"name": name})
            want = Want("vm", name, host, spec, vm.state, parts=parts)
            nics = {n.network for n in spec.nics if n.network}
            images = {d.image.split("/")[-1] for d in spec.disks if d.image}
            want.after = [p.key for p in pools if p.host == host]
            want.after += [n.key for n in nets if n.host == host and n.name in nics]
            want.after += [t.key for t in templates if t.host == host and t.name in images]
            for dep in vm.depends_on:
                want.after += [("vm", n, h) for n, h in instances.get(dep, [])]
            out.append(want)
    return out


def plan_steps(
    site: Site, hosts: dict[str, SiteHost], now: dict[str, HostNow], *, prune: bool
) -> tuple[list[Step], list[Unmanaged], int]:
    """The steps, what is on the hosts but not of this site, and how many managed resources
    the file no longer has (deleted only with ``prune``)."""
    wants = wanted(site)
    steps: list[Step] = []
    for want in wants:
        host, state = hosts[want.host], now[want.host]
        step = {
            "pool": _pool,
            "network": _network,
            "template": _template,
            "vm": _vm,
        }[want.kind](site, want, host, state)
        if step is not None:
            steps.append(step)
    listed = {w.key for w in wants}
    unmanaged: list[Unmanaged] = []
    extra: list[Step] = []
    for host_name, state in now.items():
        for name, (summary, meta) in state.vms.items():
            if ("vm", name, host_name) in listed:
                continue
            if meta.site == site.site:
                extra.append(_delete_vm(hosts[host_name], summary))
            else:
                unmanaged.append(
                    Unmanaged(kind="vm", name=name, host=host_name, managed_by=meta.site)
                )
        for kind, names in (("pool", state.pools), ("network", state.networks)):
            for name in names:
                if (kind, name, host_name) in listed:
                    continue
                owner = state.marks.get((kind, name))
                if owner == site.site:
                    extra.append(
                        Step(Change(action="delete", kind=kind, name=name, host=host_name))
                    )
                else:
                    unmanaged.append(
                        Unmanaged(kind=kind, name=name, host=host_name, managed_by=owner)
                    )
        templates = {
            f"{w.spec.pool or hosts[w.host].storage_pool}/{w.name}"
            for w in wants
            if w.kind == "template" and w.host == host_name
        }
        for (kind, name), owner in state.marks.items():
            if kind == "template" and owner == site.site and name not in templates:
                extra.append(
                    Step(
                        Change(
                            action="delete",
                            kind="template",
                            name=name,
                            host=host_name,
                            destroys=[f"template volume {name}"],
                        )
                    )
                )
    if prune:
        steps.extend(extra)
    steps.sort(key=lambda s: (KIND_ORDER[s.change.kind], s.change.host, s.change.name))
    return steps, unmanaged, len(extra)


def make_plan(
    site: Site,
    steps: list[Step],
    unmanaged: list[Unmanaged],
    pruned: int,
    prune: bool,
    seconds: float,
) -> Plan:
    return Plan(
        site=site.site,
        changes=[s.change for s in steps],
        unmanaged=unmanaged,
        prune=prune,
        pruned=0 if prune else pruned,
        seconds=seconds,
    )


def _conflict(kind: str, name: str, host: str, owner: str | None) -> Step:
    why = f"exists, managed by site {owner}" if owner else "exists, managed by no site"
    return Step(
        Change(
            action="conflict",
            kind=kind,
            name=name,
            host=host,
            details=[f"{why}: rename it in the file, or remove the {kind} first"],
        )
    )


def _pool(site: Site, want: Want, host: SiteHost, now: HostNow) -> Step | None:
    spec: SitePool = want.spec
    current = now.pools.get(want.name)
    if current is None:
        detail = f"{spec.type} pool at {spec.path}" if spec.path else f"{spec.type} pool"
        return Step(
            Change(action="create", kind="pool", name=want.name, host=want.host, details=[detail]),
            want,
        )
    owner = now.marks.get(("pool", want.name))
    if owner != site.site:
        return _conflict("pool", want.name, want.host, owner)
    if (current.type, current.path) != (spec.type, spec.path):
        return Step(
            Change(
                action="replace",
                kind="pool",
                name=want.name,
                host=want.host,
                details=[f"{current.type} {current.path} -> {spec.type} {spec.path}"],
                destroys=["the pool's definition (its volumes stay where they are)"],
            ),
            want,
        )
    return _running_and_autostart(want, True, current.active, spec.autostart, current.autostart)


def _network(site: Site, want: Want, host: SiteHost, now: HostNow) -> Step | None:
    spec: SiteNetwork = want.spec
    current = now.networks.get(want.name)
    if current is None:
        detail = spec.kind + (f" {spec.ipv4}" if spec.ipv4 else "")
        return Step(
            Change(
                action="create", kind="network", name=want.name, host=want.host, details=[detail]
            ),
            want,
        )
    owner = now.marks.get(("network", want.name))
    if owner != site.site:
        return _conflict("network", want.name, want.host, owner)
    if (current.kind, current.ipv4, current.ipv6) != (spec.kind, spec.ipv4, spec.ipv6):
        return Step(
            Change(
                action="replace",
                kind="network",
                name=want.name,
                host=want.host,
                details=[
                    f"{current.kind} {current.ipv4 or ''} -> {spec.kind} {spec.ipv4 or ''}".strip()
                ],
                destroys=["the network (guests on it lose their link until it is back)"],
            ),
            want,
        )
    return _running_and_autostart(
        want, spec.start, current.active, spec.autostart, current.autostart
    )


def _running_and_autostart(
    want: Want, start: bool, active: bool, autostart: bool, has_autostart: bool
) -> Step | None:
    """A pool's or network's changes in place: start it, and its autostart flag."""
    details: list[str] = []
    actions: list[tuple[str, Any]] = []
    if start and not active:
        details.append("start (it is stopped)")
        actions.append(("start", True))
    if has_autostart != autostart:
        details.append(f"autostart {'on' if autostart else 'off'}")
        actions.append(("autostart", autostart))
    if not actions:
        return None
    change = Change(
        action="update", kind=want.kind, name=want.name, host=want.host, details=details
    )
    return Step(change, want, actions)


def _template(site: Site, want: Want, host: SiteHost, now: HostNow) -> Step | None:
    spec: SiteTemplate = want.spec
    pool = spec.pool or host.storage_pool
    if (pool, want.name) in now.templates:
        return None
    how = f"import {spec.import_path}" if spec.import_path else f"build {spec.build}"
    return Step(
        Change(
            action="create",
            kind="template",
            name=want.name,
            host=want.host,
            details=[f"{how} into pool {pool}"],
        ),
        want,
    )


def _delete_vm(host: SiteHost, summary: VMSummary) -> Step:
    try:
        destroys = host.vms.storage_to_remove(summary.name)
    except VirtkitError:  # advice only: the delete itself says what it removes
        destroys = []
    return Step(
        Change(
            action="delete",
            kind="vm",
            name=summary.name,
            host=host.name,
            details=[
                f"{summary.state.value}, {summary.vcpus} vCPUs, {format_size(summary.memory)}"
            ],
            destroys=destroys or ["no storage"],
        ),
    )


def _vm(site: Site, want: Want, host: SiteHost, now: HostNow) -> Step | None:
    spec: VMSpec = want.spec
    parts = want.parts
    found = now.vms.get(want.name)
    if found is None:
        detail = f"{spec.vcpus} vCPUs, {format_size(spec.memory)}"
        if want.state == "running":
            detail += ", started"
        return Step(
            Change(action="create", kind="vm", name=want.name, host=want.host, details=[detail]),
            want,
            parts=parts,
        )
    summary, meta = found
    if meta.site != site.site:
        return _conflict("vm", want.name, want.host, meta.site)
    had = decode_parts(meta.site_spec)
    if had.get("r") != parts["r"]:
        destroys = host.vms.storage_to_remove(want.name)
        return Step(
            Change(
                action="replace",
                kind="vm",
                name=want.name,
                host=want.host,
                details=[
                    "its image, cloud-init, boot or devices changed: only a new VM can have them"
                ],
                destroys=destroys or ["no storage"],
            ),
            want,
            parts=parts,
        )
    return _vm_update(want, host, summary, meta, had, parts)


def _vm_update(
    want: Want,
    host: SiteHost,
    summary: VMSummary,
    meta: VMMeta,
    had: dict[str, str],
    parts: dict[str, str],
) -> Step | None:
    spec: VMSpec = want.spec
    running = summary.state.value in ("running", "paused")
    details: list[str] = []
    actions: list[tuple[str, Any]] = []
    restart = False
    if had.get("s") != parts["s"]:
        sizes: list[str] = []
        if summary.vcpus != spec.vcpus:
            sizes.append(f"vCPUs {summary.vcpus} -> {spec.vcpus}")
            actions.append(("vcpus", spec.vcpus))
        if summary.memory != spec.memory:
            live = running and spec.memory <= summary.max_memory
            restart = restart or (running and not live)
            sizes.append(
                f"memory {format_size(summary.memory)} -> {format_size(spec.memory)} "
                f"({'live' if live else 'next boot' if running else 'stopped VM'})"
            )
            actions.append(("memory", spec.memory))
        if spec.max_vcpus is not None:
            sizes.append(f"vCPU maximum {spec.max_vcpus} (next boot)")
            restart = restart or running
            actions.append(("max_vcpus", spec.max_vcpus))
        details += sizes
    if sorted(summary.tags) != sorted(spec.tags):
        details.append(f"tags {', '.join(summary.tags) or '-'} -> {', '.join(spec.tags) or '-'}")
        actions.append(("tags", list(spec.tags)))
    if summary.autostart != spec.autostart:
        details.append(f"autostart {'on' if spec.autostart else 'off'}")
        actions.append(("autostart", spec.autostart))
    if had.get("n") != parts["n"]:
        nic_details, nic_actions = _nic_changes(host, want.name, spec, running)
        details += nic_details
        actions += nic_actions
    if had.get("d") != parts["d"]:
        disk = _disk_changes(host, want.name, spec, had.get("d"))
        if disk is None:
            return Step(
                Change(
                    action="replace",
                    kind="vm",
                    name=want.name,
                    host=want.host,
                    details=["its disks changed other than by new blank disks at the end"],
                    destroys=host.vms.storage_to_remove(want.name) or ["no storage"],
                ),
                want,
                parts=parts,
            )
        details += disk[0]
        actions += disk[1]
    if want.state == "running" and not running:
        details.append("start")
        actions.append(("start", True))
    elif want.state == "shutoff" and running:
        details.append("shut down")
        actions.append(("shutdown", True))
    if had != parts:
        if not actions:  # the same VM: only the spec's digests to record
            details.append("record the spec's digests")
        actions.append(("record", True))
    if not actions:
        return None
    return Step(
        Change(
            action="update",
            kind="vm",
            name=want.name,
            host=want.host,
            details=details,
            restart=restart,
        ),
        want,
        actions,
        parts,
    )


def _nic_source(kind: str, source: str | None) -> tuple[str, str]:
    return (kind, source or "")


def _nic_changes(
    host: SiteHost, name: str, spec: VMSpec, running: bool
) -> tuple[list[str], list[tuple[str, Any]]]:
    current = [n for n in host.nics.list(name) if n.type in ("network", "bridge", "direct")]
    want = Counter(
        _nic_source(
            "network" if n.network else "bridge" if n.bridge else "direct",
            n.network or n.bridge or n.direct,
        )
        for n in spec.nics
        if not n.user
    )
    have = Counter(_nic_source(n.type, n.source) for n in current)
    details: list[str] = []
    actions: list[tuple[str, Any]] = []
    how = "hot-plugged" if running else "added"
    for nic in spec.nics:
        if nic.user:
            continue
        key = _nic_source(
            "network" if nic.network else "bridge" if nic.bridge else "direct",
            nic.network or nic.bridge or nic.direct,
        )
        if have[key] > 0:
            have[key] -= 1
            want[key] -= 1
            continue
        details.append(f"NIC on {key[0]} {key[1]} ({how})")
        actions.append(("nic_add", nic))
    for n in current:
        key = _nic_source(n.type, n.source)
        if have[key] > 0 and want[key] <= 0:
            have[key] -= 1
            details.append(f"remove NIC {n.mac} on {key[0]} {key[1]}")
            actions.append(("nic_remove", n.mac))
    return details, actions


def _disk_changes(
    host: SiteHost, name: str, spec: VMSpec, had: str | None
) -> tuple[list[str], list[tuple[str, Any]]] | None:
    """New blank disks at the end are attached; any other change needs a new VM (None)."""
    digest, _, count_text = (had or "").partition(".")
    try:
        old_count = int(count_text)
    except ValueError:
        return None
    head = spec.disks[:old_count]
    same_head = _digest([d.model_dump(mode="json") for d in head]) == digest
    extra = spec.disks[old_count:]
    if (
        not same_head
        or len(spec.disks) < old_count
        or any(not d.size or d.image or d.path for d in extra)
    ):
        return None
    current = [d for d in host.disks.list(name) if d.device == "disk"]
    if len(current) < old_count:
        return None
    details = [f"new {format_size(d.size or 0)} disk (hot-plugged)" for d in extra]
    return details, [("disk_add", d) for d in extra]
