# virtkit's Ansible inventory plugin: the VMs of a libvirt host, grouped by tag, host, state,
# template and OS, with the variables Ansible connects with (docs/ansible.md).
#
# Install: put this directory on Ansible's inventory plugin path
#   export ANSIBLE_INVENTORY_PLUGINS=/path/to/virtkit/contrib/ansible/inventory_plugins
# (or `inventory_plugins = ...` in ansible.cfg), with virtkit importable by Ansible's Python,
# then `ansible-inventory -i virtkit.yml --list` with a file virtkit.yml holding `plugin: virtkit`.
#
# The groups and variables come from virtkit's own service (virtkit.services.inventory), the
# one `virtkit inventory --list` prints: this file only hands them to Ansible.

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

DOCUMENTATION = r"""
    name: virtkit
    short_description: The VMs of a libvirt host managed by virtkit
    description:
      - Hosts are the VMs of one libvirt host, read through virtkit (one bulk listing).
      - Groups per tag (C(tag_<tag>), and C(<key>_<value>) for C(key=value) tags), per host
        (C(host_<hostname>)), per state (C(state_running), ...), C(running), per template
        (C(template_<name>)) and per OS when virtkit knows the template's OS.
      - Host variables ansible_host, ansible_port (a user-mode SSH forward), ansible_user (the
        user cloud-init made), ansible_ssh_common_args (pinning the SSH host keys virtkit made),
        and virtkit_state, virtkit_vcpus, virtkit_memory, virtkit_host, virtkit_tags,
        virtkit_template, virtkit_os, virtkit_uuid.
      - The configuration file's name must end in C(virtkit.yml) or C(virtkit.yaml).
    options:
      plugin:
        description: The name of this plugin; C(virtkit) makes the file this plugin's.
        required: true
        choices: ['virtkit']
      uri:
        description:
          - libvirt URI of the host; else virtkit's settings (VIRTKIT_URI, its TOML file).
        type: str
        required: false
      settings:
        description:
          - Overrides of virtkit's settings (cache_dir, state_dir, ...), as in its TOML file.
        type: dict
        required: false
        default: {}
"""

EXAMPLES = r"""
# virtkit.yml
plugin: virtkit
uri: qemu:///system
"""


class InventoryModule(BaseInventoryPlugin):
    NAME = "virtkit"

    def verify_file(self, path: str) -> bool:
        return bool(super().verify_file(path)) and path.endswith(("virtkit.yml", "virtkit.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            from virtkit import Client, Settings
            from virtkit.errors import VirtkitError
        except ImportError as exc:
            raise AnsibleParserError(
                f"virtkit is not importable by Ansible's Python: {exc}"
            ) from exc
        overrides = dict(self.get_option("settings") or {})
        if self.get_option("uri"):
            overrides["uri"] = self.get_option("uri")
        try:
            with Client(settings=Settings.load(**overrides)) as client:
                found = client.inventory.build()
        except VirtkitError as exc:
            raise AnsibleParserError(f"virtkit inventory: {exc}") from exc
        for name, variables in found.hostvars.items():
            self.inventory.add_host(name)
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
        for group, hosts in found.groups.items():
            self.inventory.add_group(group)
            for name in hosts:
                self.inventory.add_child(group, name)
