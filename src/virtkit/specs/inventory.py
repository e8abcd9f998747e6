"""The Ansible inventory of a host's VMs: groups and each host's variables."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from virtkit.specs.common import _View


class Inventory(_View):
    """What ``virtkit inventory`` reports, and the inventory plugin adds to Ansible's."""

    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Group name -> its hosts (VM names), sorted."
    )
    hostvars: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="VM name -> its variables (ansible_host, ...)."
    )

    def ansible(self) -> dict[str, Any]:
        """Ansible's dynamic-inventory JSON (``--list``): every group a child of ``all``, the
        host variables under ``_meta`` (so Ansible never asks ``--host`` per host)."""
        listing: dict[str, Any] = {"_meta": {"hostvars": self.hostvars}}
        listing["all"] = {"children": ["ungrouped", *sorted(self.groups)]}
        grouped = {h for hosts in self.groups.values() for h in hosts}
        listing["ungrouped"] = {"hosts": sorted(set(self.hostvars) - grouped)}
        for group, hosts in sorted(self.groups.items()):
            listing[group] = {"hosts": hosts}
        return listing
