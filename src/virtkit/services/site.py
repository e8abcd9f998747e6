"""``Client.sites``: a whole site as code (``virtkit plan|apply|drift -f site.yaml``).

Reading the file and its checks are ``sitefile``; the hosts' state ``sitestate``; the diff
``siteplan``; carrying it out ``siteapply``. Only what carries this site's mark is ever
changed or deleted: a VM's mark is in its virtkit metadata, a pool's, network's or
template's in virtkit's store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from virtkit.errors import InvalidState
from virtkit.services.siteapply import Applier, Progress
from virtkit.services.sitefile import load_site, parse_site
from virtkit.services.siteplan import Step, make_plan, plan_steps, wanted
from virtkit.services.sitestate import HostNow, SiteHost, read_hosts
from virtkit.specs import VMSpec, format_size
from virtkit.specs.site import ApplyResult, Drift, Plan, Site, SiteNetwork, SitePool
from virtkit.xml.domain import Domain

HostsFor = Callable[[Site], dict[str, SiteHost]]


class SiteService:
    def __init__(self, hosts_for: HostsFor) -> None:
        self.hosts_for = hosts_for

    @staticmethod
    def load(path: str | Path) -> Site:
        return load_site(path)

    @staticmethod
    def parse(text: str, source: str = "site file") -> Site:
        return parse_site(text, source)

    def _steps(self, site: Site, prune: bool) -> tuple[dict[str, SiteHost], list[Step], Plan]:
        started = time.monotonic()
        hosts = self.hosts_for(site)
        now = read_hosts(hosts)
        steps, unmanaged, pruned = plan_steps(site, hosts, now, prune=prune)
        plan = make_plan(site, steps, unmanaged, pruned, prune, time.monotonic() - started)
        return hosts, steps, plan

    def plan(self, site: Site, *, prune: bool = False) -> Plan:
        """What apply would do; changes nothing."""
        return self._steps(site, prune)[2]

    def apply(
        self,
        site: Site,
        *,
        prune: bool = False,
        allow_replace: bool = False,
        parallel: int = 4,
        progress: Progress | None = None,
        confirm: Callable[[Plan], bool] | None = None,
    ) -> tuple[Plan, ApplyResult]:
        """Make the hosts match the file. Refused, before anything changes, while the plan has
        conflicts (a resource of the file's name that this site does not manage) or replaces
        without ``allow_replace``; ``confirm`` (given the plan) may still say no."""
        hosts, steps, plan = self._steps(site, prune)
        conflicts = [c for c in plan.changes if c.action == "conflict"]
        if conflicts:
            lines = "; ".join(f"{c.kind} {c.name} on {c.host}: {c.details[0]}" for c in conflicts)
            raise InvalidState(f"nothing applied: {lines}", code="site_conflict")
        replaces = [c for c in plan.changes if c.action == "replace"]
        if replaces and not allow_replace:
            lines = "; ".join(
                f"{c.kind} {c.name} on {c.host} (destroys {', '.join(c.destroys)})"
                for c in replaces
            )
            raise InvalidState(
                f"nothing applied: the plan replaces {lines}; apply it with --allow-replace",
                code="site_replace_refused",
            )
        if not steps:
            return plan, ApplyResult(site=site.site, steps=[], ok=True, seconds=plan.seconds)
        if confirm is not None and not confirm(plan):
            raise InvalidState("nothing applied: not confirmed", code="confirmation_required")
        applier = Applier(site.site, hosts, steps, parallel=parallel, progress=progress)
        return plan, applier.run()

    def drift(self, site: Site) -> list[Drift]:
        """What differs on the hosts from the file, read in full: each VM's definition too
        (NICs, disks), not only the listing a plan reads."""
        hosts = self.hosts_for(site)
        now = read_hosts(hosts)
        out: list[Drift] = []
        for want in wanted(site):
            state = now[want.host]
            if want.kind == "vm":
                out += _vm_drift(site, hosts[want.host], state, want.name, want.spec, want.state)
            elif want.kind == "pool":
                out += _pool_drift(state, want.name, want.host, want.spec)
            elif want.kind == "network":
                out += _network_drift(state, want.name, want.host, want.spec)
            else:
                pool = want.spec.pool or hosts[want.host].storage_pool
                if (pool, want.name) not in state.templates:
                    out.append(_missing("template", want.name, want.host))
        return out


def _missing(kind: str, name: str, host: str) -> Drift:
    return Drift(kind=kind, name=name, host=host, field="exists", want="yes", have="no")


def _vm_drift(
    site: Site, host: SiteHost, now: HostNow, name: str, spec: VMSpec, state: str
) -> list[Drift]:
    found = now.vms.get(name)
    if found is None:
        return [_missing("vm", name, host.name)]
    summary, meta = found

    def d(field: str, want: object, have: object) -> Drift:
        return Drift(
            kind="vm", name=name, host=host.name, field=field, want=str(want), have=str(have)
        )

    out = []
    if meta.site != site.site:
        out.append(d("site", site.site, meta.site or "none"))
    config = Domain.parse(host.vms.xml(name, inactive=True))  # what it starts with next
    vcpus = config.vcpu_current or config.vcpu
    memory = (config.current_memory_kib or config.memory_kib or 0) * 1024
    for field, want, have in (
        ("vcpus", spec.vcpus, vcpus),
        ("memory", format_size(spec.memory), format_size(memory)),
        ("tags", sorted(spec.tags), sorted(summary.tags)),
        ("autostart", spec.autostart, summary.autostart),
    ):
        if want != have:
            out.append(d(field, want, have))
    running = summary.state.value in ("running", "paused")
    if (state == "running") != running:
        out.append(d("state", state, summary.state.value))
    want_nics = Counter(
        (
            (n.network and "network") or (n.bridge and "bridge") or "direct",
            n.network or n.bridge or n.direct,
        )
        for n in spec.nics
        if not n.user
    )
    have_nics = Counter(
        (n.type, n.source)
        for n in host.nics.list(name)
        if n.type in ("network", "bridge", "direct")
    )
    if want_nics != have_nics:
        out.append(d("nics", _nics(want_nics), _nics(have_nics)))
    disks = [v for v in host.disks.list(name) if v.device == "disk"]
    if len(disks) != len(spec.disks):
        out.append(d("disks", len(spec.disks), len(disks)))
    return out


def _nics(counts: Counter[tuple[str, str | None]]) -> str:
    return (
        ", ".join(
            f"{k} {s}" + (f" x{n}" if n > 1 else "")
            for (k, s), n in sorted(counts.items(), key=lambda i: (i[0][0], i[0][1] or ""))
        )
        or "none"
    )


def _pool_drift(now: HostNow, name: str, host: str, spec: SitePool) -> list[Drift]:
    current = now.pools.get(name)
    if current is None:
        return [_missing("pool", name, host)]
    out = []
    for field, want, have in (
        ("type", spec.type, current.type),
        ("path", spec.path, current.path),
        ("active", True, current.active),
        ("autostart", spec.autostart, current.autostart),
    ):
        if want != have:
            out.append(
                Drift(
                    kind="pool", name=name, host=host, field=field, want=str(want), have=str(have)
                )
            )
    return out


def _network_drift(now: HostNow, name: str, host: str, spec: SiteNetwork) -> list[Drift]:
    current = now.networks.get(name)
    if current is None:
        return [_missing("network", name, host)]
    out = []
    for field, want, have in (
        ("kind", spec.kind, current.kind),
        ("ipv4", spec.ipv4, current.ipv4),
        ("active", spec.start, current.active),
        ("autostart", spec.autostart, current.autostart),
    ):
        if want != have:
            out.append(
                Drift(
                    kind="network",
                    name=name,
                    host=host,
                    field=field,
                    want=str(want),
                    have=str(have),
                )
            )
    return out
