"""ansible-core against real guests: two cloud-init guests from the debian-12 template (tags
role=web and role=db, SSH forwarded to 127.0.0.1 by user-mode networking) appear in their tag
groups through the `virtkit` inventory plugin, answer `ansible -m ping` over SSH with strict
host-key checking and no prompt (the host keys virtkit pinned), and run a small playbook that
writes a file and reads it back."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Bed
from tests.integration.conftest import CloudGuests

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "contrib" / "ansible" / "inventory_plugins"
ROLES = ("web", "db")

if not (BIN / "ansible").exists():
    pytest.skip("ansible-core is not installed (the dev extra has it)", allow_module_level=True)


@pytest.fixture(scope="module")
def ansible_guests(cloud_guests: CloudGuests) -> CloudGuests:
    """The two cloud-init guests `virtkit apply` made from a site file (role=web, role=db;
    tests/integration/conftest.py), shared with the cloud-init tests."""
    return cloud_guests


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory holding the inventory file, an empty ansible.cfg and HOME: nothing of this
    machine's Ansible or SSH configuration (no ~/.ssh/known_hosts) takes part. A short path:
    SSH's connection-sharing socket goes under HOME, and a socket's path has 107 bytes at most."""
    path = Path(tempfile.mkdtemp(prefix="vkans-"))
    (path / "home").mkdir()
    (path / "ansible.cfg").write_text("")
    (path / "virtkit.yml").write_text("plugin: virtkit\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ansible(
    bed: Bed, workdir: Path, tool: str, *args: str, timeout: float = 300, **more: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **bed.env(),  # VIRTKIT_URI and the directories of the test bed: the plugin reads them
        "HOME": str(workdir / "home"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"),
        "ANSIBLE_INVENTORY_PLUGINS": str(PLUGINS),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_TIMEOUT": "60",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PIPELINING": "True",  # one SSH round trip per task, not three
        "ANSIBLE_LOCAL_TEMP": str(workdir / "home" / "tmp"),
        **more,
    }
    return subprocess.run(
        [str(BIN / tool), *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,  # a host-key prompt would find no one to answer: a failure
    )


def unsafe(value: Any) -> Any:
    """ansible-inventory's JSON with its ``{"__ansible_unsafe": x}`` wrappers taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsafe(v) for v in value]
    return value


@pytest.mark.timeout(1200)  # the set-up may build the template, then boots two TCG guests
def test_ansible_inventory_shows_the_guests_in_their_tag_groups(
    bed: Bed, ansible_guests: CloudGuests, workdir: Path
) -> None:
    done = ansible(bed, workdir, "ansible-inventory", "-i", "virtkit.yml", "--list")
    assert done.returncode == 0, done.stderr
    found = unsafe(json.loads(done.stdout))
    web, db = ansible_guests.names["web"], ansible_guests.names["db"]
    assert found["role_web"]["hosts"] == [web]
    assert found["role_db"]["hosts"] == [db]
    assert {web, db} <= set(found["tag_site_vktest"]["hosts"])
    assert {web, db} <= set(found["running"]["hosts"])
    assert {web, db} <= set(found["template_vktest_debian12"]["hosts"])
    assert {web, db} <= set(found["os_debian_bookworm"]["hosts"])  # the template's OS
    for name in (web, db):
        hostvars = found["_meta"]["hostvars"][name]
        assert hostvars["ansible_host"] == "127.0.0.1"
        assert hostvars["ansible_port"] == ansible_guests.ports[name]
        assert hostvars["ansible_user"] == "admin"
        assert hostvars["virtkit_state"] == "running"
        assert hostvars["virtkit_memory"] == 512 * 2**20
        args = shlex.split(hostvars["ansible_ssh_common_args"])
        assert "StrictHostKeyChecking=yes" in args and f"HostKeyAlias=virtkit-{name}" in args
        known = Path(next(a for a in args if a.startswith("UserKnownHostsFile=")).split("=")[1])
        with bed.client() as vk:
            pins = vk.vms.get(name).ssh_host_keys
        assert known.read_text() == "".join(f"virtkit-{name} {pin}\n" for pin in pins)
        assert len(pins) == 3


def test_ansible_ping_needs_no_trust_on_first_use(
    bed: Bed, ansible_guests: CloudGuests, workdir: Path
) -> None:
    limit = ",".join(ansible_guests.names.values())
    key = str(ansible_guests.key)
    pinged = ansible(bed, workdir, "ansible", "all", "-i", "virtkit.yml", "--limit", limit,
                     "-m", "ping", "--private-key", key)  # fmt: skip
    assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    for name in ansible_guests.names.values():
        assert f"{name} | SUCCESS" in pinged.stdout, pinged.stdout
    assert "yes/no" not in pinged.stdout + pinged.stderr
    # nothing was learnt on first use: no known_hosts of the user's own
    assert not (workdir / "home" / ".ssh" / "known_hosts").exists()
    # the check is strict: pinned to another machine's key, the same connection is refused
    other = workdir / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    web = ansible_guests.names["web"]
    wrong = workdir / "wrong_known_hosts"
    wrong.write_text(
        f"virtkit-{web} {' '.join((other.with_suffix('.pub')).read_text().split()[:2])}\n"
    )
    common = shlex.join(["-o", f"HostKeyAlias=virtkit-{web}", "-o", f"UserKnownHostsFile={wrong}",
                         "-o", "StrictHostKeyChecking=yes"])  # fmt: skip
    refused = ansible(bed, workdir, "ansible", web, "-i", "virtkit.yml", "-m", "ping",
                      "--private-key", key,
                      "-e", json.dumps({"ansible_ssh_common_args": common}),
                      # a new connection: not the master the ping above left open (60 s)
                      ANSIBLE_SSH_ARGS="-o ControlMaster=no")  # fmt: skip
    assert refused.returncode != 0
    assert "UNREACHABLE" in refused.stdout and "Host key verification failed" in refused.stdout


PLAYBOOK = """\
- hosts: role_web:role_db
  gather_facts: false
  tasks:
    - name: write a file
      ansible.builtin.copy:
        dest: /tmp/virtkit-ansible.txt
        content: "{{ inventory_hostname }} has {{ virtkit_tags | sort | join(' ') }}\\n"
        mode: "0644"
    - name: read it back
      ansible.builtin.slurp:
        src: /tmp/virtkit-ansible.txt
      register: back
    - name: it holds what was written
      vars:
        written: "{{ inventory_hostname }} has {{ virtkit_tags | sort | join(' ') }}\n"
      ansible.builtin.assert:
        that:
          - (back.content | b64decode | trim) == (written | trim)
    - name: and cat agrees
      ansible.builtin.command: cat /tmp/virtkit-ansible.txt
      register: cat
      changed_when: false
    - ansible.builtin.debug:
        msg: "READ BACK: {{ cat.stdout }}"
"""


def test_a_playbook_writes_a_file_and_reads_it_back(
    bed: Bed, ansible_guests: CloudGuests, workdir: Path
) -> None:
    (workdir / "site.yml").write_text(PLAYBOOK)
    played = ansible(bed, workdir, "ansible-playbook", "-i", "virtkit.yml", "site.yml",
                     "--private-key", str(ansible_guests.key))  # fmt: skip
    assert played.returncode == 0, played.stdout + played.stderr
    for role, name in ansible_guests.names.items():
        assert f"READ BACK: {name} has role={role} site=vktest" in played.stdout
        recap = next(line for line in played.stdout.splitlines() if line.startswith(name + " "))
        assert "failed=0" in recap and "unreachable=0" in recap and "ok=5" in recap, recap
