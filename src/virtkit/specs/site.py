"""A site file: the desired state of pools, networks, templates and VMs across hosts
(``virtkit plan|apply|drift -f site.yaml``), and what a plan says about it.

The JSON schema is ``virtkit site schema``. Rules that need no host are checked here, once:
unknown keys, names, duplicates, hosts that the file does not declare, ``depends_on`` naming
nothing or going round in a cycle, replica name patterns. ``services/sitefile.py`` reads the
YAML with its line numbers so that each problem names its line.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from virtkit.errors import InvalidInput
from virtkit.specs.common import _Spec, _View, as_rule_error, name_rule, validate_name
from virtkit.specs.network import NetworkSpec
from virtkit.specs.storage import PoolSpec
from virtkit.specs.vm import VMSpec

DEFAULT_HOST = "default"
REPLICA = "{n}"


class SiteHost(_Spec):
    """A libvirt host of the site."""

    name: Annotated[str, name_rule("host")] = Field(
        description="How resources name the host (`host: NAME`)."
    )
    uri: str = Field(description="Its libvirt URI: qemu:///system, qemu+ssh://root@h/system, ...")


class SitePool(PoolSpec):
    """A storage pool (as `virtkit pool create`), on one host."""

    host: str | None = Field(None, description="The host (default: the first, or `default`).")


class SiteNetwork(NetworkSpec):
    """A virtual network (as `virtkit net create`), on one host."""

    host: str | None = Field(None, description="The host (default: the first, or `default`).")


class SiteTemplate(_Spec):
    """A template made when missing: imported from a file on the host, or built (Debian with
    cloud-init, as `virtkit image build`)."""

    model_config = ConfigDict(populate_by_name=True)
    name: str = Field(description="The template's volume name, as VMs' disks name it (image:).")
    pool: str | None = Field(None, description="Its pool (default: virtkit's storage pool).")
    import_path: str | None = Field(None, alias="import", description="A disk image to import.")
    build: Literal["debian-12"] | None = Field(None, description="Build it: debian-12.")
    host: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SiteTemplate:
        if (self.import_path is None) == (self.build is None):
            raise ValueError("give exactly one of 'import' (a file) or 'build' (debian-12)")
        return self


class SiteVM(VMSpec):
    """A VM spec (as `virtkit vm create -f`), plus where it runs, how many, and its state."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)

    name: str = Field(
        description="VM name; with replicas, a pattern with {n} (1, 2, ...): web-{n}."
    )
    replicas: int = Field(1, ge=1, le=1000, description="How many VMs of this spec.")
    host: str | None = Field(None, description="The host (default: the first, or `default`).")
    hosts: list[str] = Field(
        default_factory=list, description="Hosts the replicas spread over, in turn."
    )
    state: Literal["running", "shutoff"] = Field(
        "running", description="Whether the VM runs (apply starts or shuts it down)."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="VMs (their names or patterns here) apply makes and starts before this one.",
    )

    @field_validator("name")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            validate_name(value.replace(REPLICA, "1"), what="VM")
        except InvalidInput as exc:
            raise as_rule_error(exc) from None
        return value

    @model_validator(mode="after")
    def _replicas(self) -> SiteVM:
        if self.replicas > 1 and REPLICA not in self.name:
            raise ValueError(f"{self.replicas} replicas need {REPLICA} in the name (web-{REPLICA})")
        if self.host and self.hosts:
            raise ValueError("give 'host' or 'hosts', not both")
        return self

    def instances(self, default_host: str) -> list[tuple[str, str]]:
        """(VM name, host) of each replica."""
        hosts = self.hosts or [self.host or default_host]
        return [
            (self.name.replace(REPLICA, str(n)), hosts[(n - 1) % len(hosts)])
            for n in range(1, self.replicas + 1)
        ]

    def instance_spec(self, name: str) -> VMSpec:
        """The VM spec of one replica."""
        data = self.model_dump(exclude=set(SITE_ONLY), exclude_unset=False)
        data["name"] = name
        # the sizes are bytes by now: a bare number would otherwise be read as MiB or GiB
        return VMSpec.model_validate(data, context={"ints_are_bytes": True})


SITE_ONLY = ("replicas", "host", "hosts", "state", "depends_on")


class Site(_Spec):
    """The desired state of a site."""

    site: Annotated[str, name_rule("site")] = Field(
        description="The site's name: virtkit marks what it manages for the site with it, and "
        "never touches anything else."
    )
    hosts: list[SiteHost] = Field(
        default_factory=list,
        description="The site's hosts; none: one host named `default`, the URI virtkit uses.",
    )
    pools: list[SitePool] = Field(default_factory=list)
    networks: list[SiteNetwork] = Field(default_factory=list)
    templates: list[SiteTemplate] = Field(default_factory=list)
    vms: list[SiteVM] = Field(default_factory=list)

    @property
    def default_host(self) -> str:
        return self.hosts[0].name if self.hosts else DEFAULT_HOST

    def host_names(self) -> list[str]:
        return [h.name for h in self.hosts] or [DEFAULT_HOST]


# Locations of problems a whole-site check finds: (path in the document, message).
Problem = tuple[tuple[str | int, ...], str]


def check_site(site: Site) -> list[Problem]:
    """What no single field can check: duplicates, unknown hosts, dependencies."""
    problems: list[Problem] = []
    known = set(site.host_names())
    seen_hosts: set[str] = set()
    for i, host in enumerate(site.hosts):
        if host.name in seen_hosts:
            problems.append((("hosts", i, "name"), f"host {host.name!r} is declared twice"))
        seen_hosts.add(host.name)

    def check_host(path: tuple[str | int, ...], name: str | None) -> None:
        if name is not None and name not in known:
            hosts = ", ".join(sorted(known))
            problems.append((path, f"no host named {name!r} in this site (hosts: {hosts})"))

    for kind in ("pools", "networks", "templates"):
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(getattr(site, kind)):
            check_host((kind, i, "host"), item.host)
            key = (item.host or site.default_host, item.name)
            if key in seen:
                problems.append(
                    ((kind, i, "name"), f"{kind[:-1]} {item.name!r} twice on host {key[0]}")
                )
            seen.add(key)
    owner: dict[str, int] = {}  # VM name -> index of its entry
    for i, vm in enumerate(site.vms):
        check_host(("vms", i, "host"), vm.host)
        for j, host_name in enumerate(vm.hosts):
            check_host(("vms", i, "hosts", j), host_name)
        for name, _host in vm.instances(site.default_host):
            try:
                validate_name(name)
            except InvalidInput as exc:
                problems.append((("vms", i, "name"), exc.message))
                break
            if name in owner:
                problems.append(
                    (("vms", i, "name"),
                     f"VM {name!r} is declared twice (entries {owner[name] + 1} and {i + 1})")
                )  # fmt: skip
            owner.setdefault(name, i)
    problems.extend(_dependencies(site, owner))
    return problems


def _dependencies(site: Site, owner: dict[str, int]) -> list[Problem]:
    problems: list[Problem] = []
    patterns = {vm.name: i for i, vm in enumerate(site.vms)}
    edges: dict[int, set[int]] = {i: set() for i in range(len(site.vms))}
    for i, vm in enumerate(site.vms):
        for j, dep in enumerate(vm.depends_on):
            target = patterns.get(dep, owner.get(dep))
            if target is None:
                problems.append((("vms", i, "depends_on", j), f"no VM named {dep!r} in this site"))
            elif target == i:
                problems.append((("vms", i, "depends_on", j), f"{vm.name!r} depends on itself"))
            else:
                edges[i].add(target)
    cycle = _find_cycle(edges)
    if cycle:
        names = " -> ".join(site.vms[i].name for i in [*cycle, cycle[0]])
        problems.append((("vms", cycle[0], "depends_on"), f"a dependency cycle: {names}"))
    return problems


def _find_cycle(edges: dict[int, set[int]]) -> list[int]:
    state: dict[int, int] = {}  # 1: on the path, 2: done
    path: list[int] = []

    def visit(node: int) -> list[int]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


# What `vm list` shows exactly of a VM, compared with the listing by `plan`; the rest of the
# spec through digests a VM records (services/siteplan.py).
LISTED_FIELDS = ("tags", "autostart")


# -- what a plan says -------------------------------------------------------------------------

Action = Literal["create", "update", "replace", "delete", "conflict"]
Kind = Literal["pool", "network", "template", "vm"]


class Change(_View):
    action: Action
    kind: Kind
    name: str
    host: str
    details: list[str] = Field(
        default_factory=list, description="What changes, and whether live or at next boot."
    )
    restart: bool = Field(False, description="Part of the change waits for the VM's restart.")
    destroys: list[str] = Field(
        default_factory=list, description="What a delete or replace destroys (disks, files)."
    )


class Unmanaged(_View):
    kind: Kind
    name: str
    host: str
    managed_by: str | None = Field(None, description="Another site, or none.")


class Plan(_View):
    site: str
    changes: list[Change]
    unmanaged: list[Unmanaged] = Field(
        default_factory=list, description="On the hosts, not of this site: never touched."
    )
    prune: bool = Field(False, description="Deletes of what the file no longer has included.")
    pruned: int = Field(0, description="Managed resources the file no longer has (see --prune).")
    seconds: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.changes

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)


class StepResult(_View):
    kind: Kind
    name: str
    host: str
    action: Action
    ok: bool
    seconds: float
    message: str = ""


class ApplyResult(_View):
    site: str
    steps: list[StepResult]
    rolled_back: list[str] = Field(default_factory=list, description="Undone after a failure.")
    ok: bool
    seconds: float


class Drift(_View):
    kind: Kind
    name: str
    host: str
    field: str
    want: str
    have: str
