"""The Ansible inventory of a host's VMs (``virtkit inventory``, and the ``virtkit`` inventory
plugin in contrib/ansible, which calls this service): groups from tags, host, state, template
and OS; host variables Ansible connects with.

Read in few calls whatever the number of VMs: the bulk listing (its metadata copy holds tags,
template, the cloud-init user and the pinned host keys: see vmmeta.py), one address pass over
the running VMs (leases, agent, ARP; it also reads their live definitions, which hold their SSH
forwards), and the store's templates (for the OS).

The host keys virtkit made for a guest are written to a known_hosts file per VM under the cache
directory, and ``ansible_ssh_common_args`` makes ssh accept only those keys
(``StrictHostKeyChecking=yes``): the first connection needs no trust on first use.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtkit.backend.host import Host
from virtkit.errors import NotFound
from virtkit.services.access import pinned_known_hosts, ssh_endpoint
from virtkit.services.nics import NicService
from virtkit.services.vmmeta import VMMeta
from virtkit.services.vms import VMService
from virtkit.specs import GuestAddress, VMState, VMSummary, validate_name
from virtkit.specs.inventory import Inventory
from virtkit.xml.domain import Domain

_NOT_IN_GROUP_NAMES = re.compile(r"[^A-Za-z0-9_]")


def group_name(text: str) -> str:
    """``text`` as a valid Ansible group name: letters, digits and underscores, not starting
    with a digit (each other character becomes ``_``)."""
    name = _NOT_IN_GROUP_NAMES.sub("_", text)
    return name if name and not name[0].isdigit() else "_" + name


def tag_groups(tag: str) -> list[str]:
    """``tag_<tag>``, and for a ``key=value`` tag also ``<key>_<value>``."""
    groups = [group_name("tag_" + tag)]
    key, sep, value = tag.partition("=")
    if sep and key:
        groups.append(group_name(f"{key}_{value}"))
    return groups


def host_groups(vm: VMSummary, host_group: str, os_name: str | None) -> list[str]:
    """Every group VM ``vm`` is in (besides ``all``)."""
    groups = [host_group, group_name(f"state_{vm.state.value}")]
    if vm.state is VMState.RUNNING:
        groups.append("running")
    for tag in vm.tags:
        groups += tag_groups(tag)
    if vm.template:
        groups.append(group_name("template_" + vm.template.rpartition("/")[2]))
    if os_name:
        groups.append(group_name("os_" + os_name))
    return list(dict.fromkeys(groups))


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new, never a part;
    an unchanged file is left alone."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class InventoryService:
    def __init__(
        self,
        host: Host,
        vms: VMService,
        nics: NicService,
        known_hosts_dir: Path,
        template_os: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self.host = host
        self.vms = vms
        self.nics = nics
        self.known_hosts_dir = known_hosts_dir
        self._template_os = template_os  # POOL/NAME -> OS of the templates virtkit knows

    def known_hosts_file(self, name: str) -> Path:
        return self.known_hosts_dir / name

    def build(self) -> Inventory:
        """The whole inventory: groups and every VM's variables."""
        hostname = self.host.hostname()
        host_group = group_name("host_" + hostname)
        summaries = self.vms.list()
        meta = self.vms.meta.lookup(summaries)  # the copy list() just read: no further call
        live = self.nics.address_pass() if any(s.state.is_active for s in summaries) else {}
        oses = self._template_os() if any(s.template for s in summaries) else {}
        groups: dict[str, list[str]] = {}
        hostvars: dict[str, dict[str, Any]] = {}
        for vm in summaries:
            os_name = oses.get(vm.template or "")
            for group in host_groups(vm, host_group, os_name):
                groups.setdefault(group, []).append(vm.name)
            hostvars[vm.name] = self._vars(vm, meta[vm.uuid], live.get(vm.name), hostname,
                                           os_name)  # fmt: skip
        return Inventory(groups={g: sorted(h) for g, h in groups.items()}, hostvars=hostvars)

    def host_vars(self, name: str) -> dict[str, Any]:
        """One VM's variables (``virtkit inventory --host NAME``)."""
        validate_name(name)
        found = self.build().hostvars.get(name)
        if found is None:
            raise NotFound(f"no VM named {name!r}", code="vm_not_found")
        return found

    def _vars(
        self,
        vm: VMSummary,
        meta: VMMeta,
        live: tuple[Domain, list[GuestAddress]] | None,
        hostname: str,
        os_name: str | None,
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if live is not None and vm.state.is_active:
            dom, addresses = live
            target = ssh_endpoint(dom, addresses)
            if target is not None:
                found["ansible_host"] = target[0]
                if target[1] != 22:
                    found["ansible_port"] = target[1]
        if meta.login_user:
            found["ansible_user"] = meta.login_user
        pinned = pinned_known_hosts(vm.name, meta.host_keys)
        if pinned is not None:
            alias, text = pinned
            known = self.known_hosts_file(vm.name)
            write_atomically(known, text)
            found["ansible_ssh_common_args"] = shlex.join(
                ["-o", f"HostKeyAlias={alias}", "-o", f"UserKnownHostsFile={known}",
                 "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"]
            )  # fmt: skip
        found.update(
            virtkit_state=vm.state.value,
            virtkit_vcpus=vm.vcpus,
            virtkit_memory=vm.memory,
            virtkit_host=hostname,
            virtkit_tags=list(vm.tags),
            virtkit_template=vm.template,
            virtkit_os=os_name,
            virtkit_uuid=vm.uuid,
        )
        return found
