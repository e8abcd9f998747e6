"""Several hosts (issue 16) on the network-namespace test bed: three hosts, each its own
libvirtd, registered with ``virtkit host add``; ``host list`` and ``vm list`` across them, with
one host's libvirtd stopped (refused at once) and one frozen (SIGSTOP: it accepts and never
answers), each named as unreachable while the others are listed in full."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import CACHE, VIRTKIT, cli_env, wait_for_log
from tests.testbed.hosts import TestHosts
from virtkit import Client, Settings
from virtkit.services.tinyguest import BOOT_MARKER, build_tiny_guest
from virtkit.specs import parse_vm_spec

pytestmark = pytest.mark.integration


class Fleet:
    """The hosts, and the settings of the virtkit that manages them (its own store)."""

    def __init__(self, hosts: TestHosts, settings: Settings) -> None:
        self.hosts = hosts
        self.settings = settings

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = cli_env(self.settings)
        env.pop("VIRTKIT_HOST", None)
        return subprocess.run([VIRTKIT, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    (base / "logs").mkdir()
    with TestHosts(3, prefix="vkflt") as hosts:
        settings = Settings(
            uri=hosts[0].uri, cache_dir=CACHE / "hosts", state_dir=base / "state",
            storage_pool="vkflt-pool", storage_pool_path=base / "images",
            console_log_dir=base / "logs", kvm_probe_timeout=8.0,
        )  # fmt: skip
        yield Fleet(hosts, settings)


def test_hosts_and_vms_across_them_with_one_stopped_and_one_frozen(fleet: Fleet) -> None:
    h1, h2, h3 = fleet.hosts
    # h1 with its KVM verdict decided now (a probe boot there), the others without
    added = fleet.cli("host", "add", "h1", h1.uri, "--tag", "rack=1", "--json")
    assert added.returncode == 0, added.stderr
    status = json.loads(added.stdout)
    assert status["reachable"] and status["kvm"] is not None
    with Client(settings=fleet.settings) as vk:
        assert status["kvm"]["usable"] == vk.probe.kvm_verdict().usable
    for name, host in (("h2", h2), ("h3", h3)):
        done = fleet.cli("host", "add", name, host.uri, "--no-probe")
        assert done.returncode == 0 and f"added host {name}" in done.stdout, done.stderr

    # a running tiny guest on h1, a defined one on h2
    guest = build_tiny_guest(CACHE)

    def tiny(name: str) -> dict[str, object]:
        return {"name": name, "memory": "128M", "vcpus": 1, "kernel": guest.kernel,
                "initrd": guest.initrd, "cmdline": guest.cmdline}  # fmt: skip

    with Client(settings=fleet.settings.model_copy(update={"uri": h1.uri})) as vk1:
        vk1.vms.create(parse_vm_spec(tiny("vkflt-a")), start=True)
    with Client(settings=fleet.settings.model_copy(update={"uri": h2.uri})) as vk2:
        vk2.vms.create(parse_vm_spec(tiny("vkflt-b")))
    wait_for_log(fleet.settings.console_log_dir / "vkflt-a-serial0.log", BOOT_MARKER)

    listed = fleet.cli("host", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    hosts = {s["host"]["name"]: s for s in json.loads(listed.stdout)}
    assert all(s["reachable"] for s in hosts.values())
    assert (hosts["h1"]["vms_running"], hosts["h1"]["vms_total"]) == (1, 1)
    assert (hosts["h2"]["vms_running"], hosts["h2"]["vms_total"]) == (0, 1)
    assert hosts["h1"]["host"]["tags"] == ["rack=1"] and hosts["h1"]["kvm"] is not None
    # distinct hosts: libvirt's own host UUIDs
    assert len({s["host"]["host_uuid"] for s in hosts.values()}) == 3

    vms = fleet.cli("vm", "list")
    assert vms.returncode == 0, vms.stderr
    rows = [line.split()[:3] for line in vms.stdout.splitlines()[1:]]
    assert rows == [["h1", "vkflt-a", "running"], ["h2", "vkflt-b", "shutoff"]]
    shown = fleet.cli("vm", "show", "vkflt-b@h2", "--json")
    assert json.loads(shown.stdout)["state"] == "shutoff", shown.stderr

    # placement: h1 runs a guest (vCPU load), h2 is in maintenance: h3 takes a new VM
    assert fleet.cli("host", "maintenance", "h2", "on", "--reason", "test").returncode == 0
    flags = ["--memory", "128M", "--kernel", guest.kernel, "--initrd", guest.initrd]
    dry = fleet.cli("vm", "create", "vkflt-c", *flags, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    placement = json.loads(dry.stdout)
    assert placement["host"] == "h3", placement
    why = {c["host"]: c for c in placement["candidates"]}
    assert why["h2"]["reasons"] == ["in maintenance (test)"] and why["h1"]["eligible"]
    assert why["h1"]["vcpu_load_after"] > why["h3"]["vcpu_load_after"]
    made = fleet.cli("vm", "create", "vkflt-c", *flags)
    assert made.returncode == 0 and "created VM vkflt-c on host h3" in made.stdout, made.stderr
    with Client(settings=fleet.settings.model_copy(update={"uri": h3.uri})) as vk3:
        assert vk3.vms.get("vkflt-c").state.value == "shutoff"
        vk3.vms.delete("vkflt-c", remove_storage=True)
    assert fleet.cli("host", "maintenance", "h2", "off").returncode == 0

    # h3's libvirtd stopped: refused at once, named; the others in full
    assert h3.daemon is not None
    h3.daemon.stop()
    try:
        down = fleet.cli("vm", "list", "--timeout", "20", "--json")
        assert down.returncode == 0, down.stderr
        by_host = {h["host"]: h for h in json.loads(down.stdout)}
        assert [v["name"] for v in by_host["h1"]["vms"]] == ["vkflt-a"]
        assert [v["name"] for v in by_host["h2"]["vms"]] == ["vkflt-b"]
        assert not by_host["h3"]["reachable"] and by_host["h3"]["error"]
        assert "no answer within" not in by_host["h3"]["error"]  # refused, not waited for

        # h2's libvirtd frozen: it accepts the connection and never answers
        assert h2.daemon is not None and h2.daemon.proc is not None
        frozen = h2.daemon.proc.pid
        os.kill(frozen, signal.SIGSTOP)
        try:
            slow = fleet.cli("vm", "list", "--timeout", "3", timeout=60)
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert slow.returncode == 0, slow.stderr
        assert [line.split()[1] for line in slow.stdout.splitlines()[1:]] == ["vkflt-a"]
        assert "host h2" in slow.stderr and "no answer within 3 s" in slow.stderr
        assert "host h3" in slow.stderr

        table = fleet.cli("host", "list").stdout.splitlines()
        h3_row = next(line for line in table if line.startswith("h3"))
        assert " DOWN " in h3_row
    finally:
        h3.daemon.start()
    again = json.loads(fleet.cli("host", "list", "--json").stdout)
    assert all(s["reachable"] for s in again)

    with Client(settings=fleet.settings.model_copy(update={"uri": h1.uri})) as vk1:
        vk1.vms.delete("vkflt-a", force=True, remove_storage=True)
    with Client(settings=fleet.settings.model_copy(update={"uri": h2.uri})) as vk2:
        vk2.vms.delete("vkflt-b", remove_storage=True)
    assert fleet.cli("host", "remove", "h3").returncode == 0
    assert "h3" not in fleet.cli("host", "list").stdout
