"""``virtkit inventory``: Ansible groups and host variables of libvirt's test driver's VMs (a
per-test ``test:///FILE``), group-name sanitising, the calls it costs, ``--host``, and the JSON
that the real ``ansible-inventory`` reads, through the inventory plugin and through a script."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtkit import Client, Settings
from virtkit.backend.faults import FaultyHost
from virtkit.backend.host import LibvirtHost
from virtkit.services.access import pinned_known_hosts, ssh_endpoint
from virtkit.services.inventory import group_name, tag_groups
from virtkit.services.store import Store
from virtkit.services.vmmeta import VMMeta
from virtkit.specs import GuestAddress
from virtkit.xml.base import VIRTKIT_NS
from virtkit.xml.domain import Domain

BIN = Path(sys.executable).parent
VIRTKIT = str(BIN / "virtkit")
ANSIBLE_INVENTORY = BIN / "ansible-inventory"
PLUGINS = Path(__file__).resolve().parents[2] / "contrib" / "ansible" / "inventory_plugins"
SRC = Path(__file__).resolve().parents[2] / "src"
WEB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHvktestwebonlyhostkeyAAAAAAAAAAAAAAAAAAAA"

NODE = f"""<node>
  <domain type='test'>
    <name>vkinv-web1</name><uuid>5a1e0c2b-7d3e-4f10-8a9b-0c1d2e3f4a01</uuid>
    <memory unit='MiB'>256</memory><vcpu>2</vcpu><os><type>hvm</type></os>
    <devices><interface type='user'><mac address='52:54:00:aa:00:01'/></interface></devices>
    <metadata><vk:virtkit xmlns:vk='{VIRTKIT_NS}' version='0.1'>
      <vk:tags><vk:tag>role=web</vk:tag><vk:tag>9lives.x</vk:tag><vk:tag>blue</vk:tag></vk:tags>
      <vk:cloud-init user='admin'><vk:host-key>{WEB_KEY}</vk:host-key></vk:cloud-init>
      <vk:template name='default/debian-12'/>
    </vk:virtkit></metadata>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vkinv-db1</name><uuid>5a1e0c2b-7d3e-4f10-8a9b-0c1d2e3f4a02</uuid>
    <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <metadata><vk:virtkit xmlns:vk='{VIRTKIT_NS}' version='0.1'>
      <vk:tags><vk:tag>role=db</vk:tag><vk:tag>blue</vk:tag></vk:tags>
      <vk:cloud-init user='dba'/>
    </vk:virtkit></metadata>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test'>
    <name>vkinv-plain</name><uuid>5a1e0c2b-7d3e-4f10-8a9b-0c1d2e3f4a03</uuid>
    <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os>
  </domain>
</node>"""


@pytest.fixture
def node(tmp_path: Path) -> Path:
    path = tmp_path / "node.xml"
    path.write_text(NODE)
    return path


@pytest.fixture
def settings(tmp_path: Path, node: Path) -> Settings:
    return Settings(uri=f"test://{node}", cache_dir=tmp_path / "c", state_dir=tmp_path / "s")


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as vk:
        yield vk


def counted(settings: Settings) -> tuple[Client, list[str]]:
    plain = Client(settings=settings)
    faulty = FaultyHost(LibvirtHost(plain.connection), {})
    calls: list[str] = faulty.calls  # type: ignore[attr-defined]
    return Client(settings=settings, host=faulty), calls


def env_of(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "ansible.cfg").write_text("")  # empty: no machine's ansible.cfg takes part
    return {
        **os.environ,
        "HOME": str(home),
        "VIRTKIT_CONFIG": "/nonexistent",
        "VIRTKIT_CACHE_DIR": str(tmp_path / "c"),
        "VIRTKIT_STATE_DIR": str(tmp_path / "s"),
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
        "ANSIBLE_INVENTORY_PLUGINS": str(PLUGINS),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",  # a source that fails fails the run
    }


def unsafe(value: Any) -> Any:
    """ansible-inventory's JSON with its ``{"__ansible_unsafe": x}`` wrappers taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsafe(v) for v in value]
    return value


# -- group names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("tag_web", "tag_web"),
        ("tag_9lives.x", "tag_9lives_x"),
        ("9lives", "_9lives"),
        ("host_kvm-01.example.org", "host_kvm_01_example_org"),
        ("os_debian-12", "os_debian_12"),
        ("tag_Ünïcode/ok", "tag__n_code_ok"),
        ("", "_"),
    ],
)
def test_group_names_follow_ansibles_rules(text: str, name: str) -> None:
    assert group_name(text) == name


def test_key_value_tags_give_a_second_group() -> None:
    assert tag_groups("role=web") == ["tag_role_web", "role_web"]
    assert tag_groups("env=prod-eu") == ["tag_env_prod_eu", "env_prod_eu"]
    assert tag_groups("1=2") == ["tag_1_2", "_1_2"]
    assert tag_groups("=x") == ["tag__x"]  # no key: the tag group only
    assert tag_groups("blue") == ["tag_blue"]


# -- the SSH endpoint and the pin (shared with vm ssh) --------------------------------------


def test_ssh_endpoint_prefers_the_user_mode_forward_then_the_first_address() -> None:
    forwarded = Domain.parse(
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<name>x</name><qemu:commandline><qemu:arg value='-netdev'/>"
        "<qemu:arg value='user,id=vknet0,hostfwd=tcp:127.0.0.1:2299-:22'/>"
        "</qemu:commandline></domain>"
    )
    plain = Domain.parse("<domain type='qemu'><name>y</name></domain>")
    address = GuestAddress(mac="52:54:00:aa:00:01", ip="198.18.0.7", prefix=24, source="lease")
    assert ssh_endpoint(forwarded, [address]) == ("127.0.0.1", 2299)
    assert ssh_endpoint(plain, [address]) == ("198.18.0.7", 22)
    assert ssh_endpoint(plain, []) is None
    assert pinned_known_hosts("y", []) is None
    assert pinned_known_hosts("y", ["ssh-ed25519 AAA", "ssh-rsa BBB"]) == (
        "virtkit-y",
        "virtkit-y ssh-ed25519 AAA\nvirtkit-y ssh-rsa BBB\n",
    )


# -- the service on the test driver ---------------------------------------------------------


def test_groups_from_tags_host_state_template_and_os(client: Client) -> None:
    host_uuid = client._host_uuid()
    client.store.add_image(host_uuid, "default", "debian-12", "/i/debian-12", "0" * 64, "build")
    client.store.mark_template(host_uuid, "/i/debian-12", "debian-12", True)
    inv = client.inventory.build()
    host_group = group_name("host_" + client.host.hostname())
    assert inv.groups == {
        host_group: ["vkinv-db1", "vkinv-plain", "vkinv-web1"],
        "state_running": ["vkinv-plain", "vkinv-web1"],
        "state_shutoff": ["vkinv-db1"],
        "running": ["vkinv-plain", "vkinv-web1"],
        "tag_role_web": ["vkinv-web1"],
        "role_web": ["vkinv-web1"],
        "tag_role_db": ["vkinv-db1"],
        "role_db": ["vkinv-db1"],
        "tag_9lives_x": ["vkinv-web1"],
        "tag_blue": ["vkinv-db1", "vkinv-web1"],
        "template_debian_12": ["vkinv-web1"],
        "os_debian_12": ["vkinv-web1"],
    }
    listing = inv.ansible()
    assert listing["all"]["children"] == ["ungrouped", *sorted(inv.groups)]
    assert listing["ungrouped"] == {"hosts": []}
    assert listing["role_web"] == {"hosts": ["vkinv-web1"]}
    assert set(listing["_meta"]["hostvars"]) == {"vkinv-web1", "vkinv-db1", "vkinv-plain"}


def test_host_variables_and_the_pinned_known_hosts_file(client: Client, settings: Settings) -> None:
    inv = client.inventory.build()
    web, db, plain = (inv.hostvars[n] for n in ("vkinv-web1", "vkinv-db1", "vkinv-plain"))
    # the test driver's guest answers for its address: what `vm ip` says
    assert web["ansible_host"] == client.nics.ip("vkinv-web1")[0].ip
    assert "ansible_port" not in web  # port 22: no user-mode forward here
    assert web["ansible_user"] == "admin"
    known = settings.cache_dir / "ansible" / "known_hosts" / "vkinv-web1"
    assert shlex.split(web["ansible_ssh_common_args"]) == [
        "-o", "HostKeyAlias=virtkit-vkinv-web1", "-o", f"UserKnownHostsFile={known}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
    ]  # fmt: skip
    assert known.read_text() == f"virtkit-vkinv-web1 {WEB_KEY}\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o644
    assert {k: v for k, v in web.items() if k.startswith("virtkit_")} == {
        "virtkit_state": "running",
        "virtkit_vcpus": 2,
        "virtkit_memory": 256 * 2**20,
        "virtkit_host": client.host.hostname(),
        "virtkit_tags": ["role=web", "9lives.x", "blue"],
        "virtkit_template": "default/debian-12",
        "virtkit_os": None,
        "virtkit_uuid": "5a1e0c2b-7d3e-4f10-8a9b-0c1d2e3f4a01",
    }
    # shut off: no address to connect to, but its user; no pinned keys: no ssh arguments
    assert "ansible_host" not in db and db["ansible_user"] == "dba"
    assert "ansible_ssh_common_args" not in db
    assert db["virtkit_state"] == "shutoff" and db["virtkit_memory"] == 128 * 2**20
    # not made by virtkit: only what libvirt knows
    assert "ansible_user" not in plain and plain["virtkit_tags"] == []
    assert not (known.parent / "vkinv-db1").exists()
    assert client.inventory.host_vars("vkinv-web1") == web


def test_a_changed_pin_rewrites_the_file_and_an_unchanged_one_is_left_alone(
    client: Client, settings: Settings
) -> None:
    known = settings.cache_dir / "ansible" / "known_hosts" / "vkinv-web1"
    client.inventory.build()
    first = known.stat().st_ino
    client.inventory.build()
    assert known.stat().st_ino == first  # not rewritten
    known.write_text("virtkit-vkinv-web1 ssh-ed25519 AAAAsomeoneelse\n")
    known.chmod(0o600)
    client.inventory.build()
    assert known.read_text() == f"virtkit-vkinv-web1 {WEB_KEY}\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o644
    assert [p.name for p in known.parent.iterdir()] == ["vkinv-web1"]  # no temporary left


def test_built_from_one_listing_and_one_address_pass(settings: Settings) -> None:
    first, _ = counted(settings)
    first.inventory.build()  # fills the store's metadata copy
    first.close()
    client, calls = counted(settings)  # another process: the store answers
    try:
        client.inventory.build()
    finally:
        client.close()
    assert "metadata_xml" not in calls
    assert calls.count("domain_rows") == 1
    # the live definitions of the running VMs, read once each by the address pass
    assert calls.count("definition") == 2
    assert "lookup" not in calls


def test_the_metadata_copy_reads_user_and_pins_as_the_definition_does(client: Client) -> None:
    for name in ("vkinv-web1", "vkinv-db1", "vkinv-plain"):
        guest = client.host.lookup(name)
        element = guest.metadata_xml(VIRTKIT_NS)
        copy = VMMeta.of_element(element) if element else VMMeta()
        assert copy == VMMeta.of_domain(guest.definition(inactive=True))
    web = VMMeta.of_domain(client.host.lookup("vkinv-web1").definition(inactive=True))
    assert web.login_user == "admin" and web.host_keys == (WEB_KEY,)


def test_a_store_from_before_the_new_columns_is_read_afresh(tmp_path: Path) -> None:
    path = tmp_path / "virtkit.db"
    with sqlite3.connect(path) as db:  # the table as an earlier virtkit made it
        db.execute(
            "CREATE TABLE vm_meta (uuid TEXT PRIMARY KEY, tags TEXT NOT NULL, "
            "virtkit INTEGER NOT NULL, owner TEXT, template TEXT, seen_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO vm_meta VALUES ('u1', '[\"web\"]', 1, NULL, NULL, 0)")
    db.close()
    store = Store(path)
    assert store.vm_meta(["u1"]) == {}  # a copy without the user and pins: not trusted
    extra = {"login_user": "admin", "host_keys": ["ssh-ed25519 AAA"], "site": None}
    store.put_vm_meta({"u1": (["web"], True, None, "p/t", extra)})
    assert store.vm_meta(["u1"]) == {"u1": (["web"], True, None, "p/t", extra)}


# -- the CLI and ansible-inventory ----------------------------------------------------------


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env_of(tmp_path), capture_output=True, text=True, timeout=120)


def test_cli_list_and_host(node: Path, tmp_path: Path) -> None:
    listing = run([VIRTKIT, "-c", f"test://{node}", "inventory", "--list"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    found = json.loads(listing.stdout)
    assert found["role_db"] == {"hosts": ["vkinv-db1"]}
    one = run([VIRTKIT, "-c", f"test://{node}", "inventory", "--host", "vkinv-web1"], tmp_path)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == found["_meta"]["hostvars"]["vkinv-web1"]
    missing = run([VIRTKIT, "-c", f"test://{node}", "inventory", "--host", "vkinv-no"], tmp_path)
    assert missing.returncode == 1 and "vkinv-no" in missing.stderr
    both = run([VIRTKIT, "-c", f"test://{node}", "inventory", "--list", "--host", "x"], tmp_path)
    assert both.returncode == 2 and "exclude" in both.stderr


needs_ansible = pytest.mark.skipif(
    not ANSIBLE_INVENTORY.exists(), reason="ansible-core is not installed (the dev extra has it)"
)


def check_ansible_view(listing: dict[str, Any]) -> None:
    found = unsafe(listing)
    assert found["role_web"]["hosts"] == ["vkinv-web1"]
    assert found["role_db"]["hosts"] == ["vkinv-db1"]
    assert sorted(found["running"]["hosts"]) == ["vkinv-plain", "vkinv-web1"]
    assert sorted(found["tag_blue"]["hosts"]) == ["vkinv-db1", "vkinv-web1"]
    assert "tag_role_web" in found["all"]["children"]
    web = found["_meta"]["hostvars"]["vkinv-web1"]
    assert web["ansible_user"] == "admin"
    assert "StrictHostKeyChecking=yes" in web["ansible_ssh_common_args"]
    assert web["virtkit_memory"] == 256 * 2**20


@needs_ansible
def test_ansible_inventory_reads_the_plugin(node: Path, tmp_path: Path) -> None:
    config = tmp_path / "site.virtkit.yml"
    config.write_text(
        f"plugin: virtkit\nuri: test://{node}\n"
        f"settings:\n  cache_dir: {tmp_path / 'c'}\n  state_dir: {tmp_path / 's'}\n"
    )
    done = run([str(ANSIBLE_INVENTORY), "-i", str(config), "--list"], tmp_path)
    assert done.returncode == 0, done.stderr
    check_ansible_view(json.loads(done.stdout))
    graph = run([str(ANSIBLE_INVENTORY), "-i", str(config), "--graph", "role_web"], tmp_path)
    assert graph.returncode == 0 and "vkinv-web1" in graph.stdout, graph.stderr
    # a file whose name does not end in virtkit.yml is not this plugin's
    other = tmp_path / "other.yml"
    other.write_text(config.read_text())
    refused = run([str(ANSIBLE_INVENTORY), "-i", str(other), "--list"], tmp_path)
    assert refused.returncode != 0


@needs_ansible
def test_ansible_inventory_reads_a_script_calling_virtkit_inventory(
    node: Path, tmp_path: Path
) -> None:
    script = tmp_path / "inventory.sh"
    script.write_text(f'#!/bin/sh\nexec {VIRTKIT} -c test://{node} inventory "$@"\n')
    script.chmod(0o755)
    done = run([str(ANSIBLE_INVENTORY), "-i", str(script), "--list"], tmp_path)
    assert done.returncode == 0, done.stderr
    check_ansible_view(json.loads(done.stdout))
    host = run([str(ANSIBLE_INVENTORY), "-i", str(script), "--host", "vkinv-db1"], tmp_path)
    assert host.returncode == 0, host.stderr
    assert unsafe(json.loads(host.stdout))["ansible_user"] == "dba"
