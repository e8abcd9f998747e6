"""Several hosts (issue 16) on the network-namespace test bed: three hosts, each its own
libvirtd, registered with ``virtkit host add``; ``host list`` and ``vm list`` across them, with
one host's libvirtd stopped (refused at once) and one frozen (SIGSTOP: it accepts and never
answers), each named as unreachable while the others are listed in full."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CACHE, VIRTKIT, cli_env, wait_for_log
from tests.integration.guestshell import GuestShell
from tests.testbed.hosts import TestHosts
from virtkit import Client, Settings
from virtkit.services.tinyguest import BOOT_MARKER, DIRTY_MARKER, TinyGuest, build_tiny_guest
from virtkit.specs import NetworkSpec, PoolSpec, parse_vm_spec

pytestmark = pytest.mark.integration


class Fleet:
    """The hosts, and the settings of the virtkit that manages them (its own store)."""

    def __init__(self, hosts: TestHosts, settings: Settings) -> None:
        self.hosts = hosts
        self.settings = settings

    def env(self) -> dict[str, str]:
        env = cli_env(self.settings)
        env.pop("VIRTKIT_HOST", None)
        return env

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VIRTKIT, *args], env=self.env(), capture_output=True, text=True,
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
    try:
        hosts_and_vms(fleet)
    finally:  # whatever failed, the next tests find the hosts empty
        for i in range(3):
            with client_of(fleet, i) as vk:
                for name in ("vkflt-a", "vkflt-b", "vkflt-c"):
                    if vk.host.exists(name):
                        vk.vms.delete(name, force=True)


def hosts_and_vms(fleet: Fleet) -> None:
    h1, h2, h3 = fleet.hosts
    # h1 with its KVM verdict decided now (a probe boot there), the others without
    added = fleet.cli("host", "add", "h1", h1.uri, "--tag", "rack=1", "--json",
                      "--migration-uri", h1.tcp_uri)  # fmt: skip
    assert added.returncode == 0, added.stderr
    status = json.loads(added.stdout)
    assert status["reachable"] and status["kvm"] is not None
    with Client(settings=fleet.settings) as vk:
        assert status["kvm"]["usable"] == vk.probe.kvm_verdict().usable
    for name, host in (("h2", h2), ("h3", h3)):
        done = fleet.cli("host", "add", name, host.uri, "--no-probe",
                         "--migration-uri", host.tcp_uri)  # fmt: skip
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


# -- migration -------------------------------------------------------------------------------


def registered(fleet: Fleet) -> None:
    """The three hosts registered (the test above removes h3 at its end)."""
    with Client(settings=fleet.settings) as vk:
        have = {h.name for h in vk.fleet.hosts()}
        for i, host in enumerate(fleet.hosts):
            name = f"h{i + 1}"
            if name not in have:
                vk.fleet.add(name, host.uri, probe=False, migration_uri=host.tcp_uri)


def client_of(fleet: Fleet, index: int, pool: str | None = None) -> Client:
    """A client of host ``index`` (new disks into ``pool``)."""
    update: dict[str, object] = {"uri": fleet.hosts[index].uri}
    if pool is not None:
        update["storage_pool"] = pool
    return Client(settings=fleet.settings.model_copy(update=update))


def ticks(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r"TICK (\d+)", log.read_text(errors="replace"))]


class TickWatch:
    """Follows a console log from the host: when each tick arrived (host time)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for n in ticks(self.log):
                self.seen.setdefault(n, now)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def largest_gap(self) -> float:
        times = [self.seen[n] for n in sorted(self.seen) if n >= 20]
        return max(b - a for a, b in itertools.pairwise(times))


def pool_on(fleet: Fleet, index: int, name: str, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with client_of(fleet, index) as vk:
        vk.pools.create_pool(PoolSpec(name=name, type="dir", path=str(path)))


def test_live_migration_shared_and_copied_storage_and_refusals(fleet: Fleet) -> None:
    registered(fleet)
    base = fleet.settings.console_log_dir.parent
    guest = build_tiny_guest(CACHE)
    # shared storage: the same pool (name and path) on h1 and h2
    for i in (0, 1):
        pool_on(fleet, i, "vkflt-shared", base / "shared")
    # copied storage: a pool of one name at different paths on h1 and h3
    pool_on(fleet, 0, "vkflt-own", base / "own1")
    pool_on(fleet, 2, "vkflt-own", base / "own3")
    name = "vkflt-m"
    log = fleet.settings.console_log_dir / f"{name}-serial0.log"
    spec = {"name": name, "memory": "128M", "vcpus": 1, "kernel": guest.kernel,
            "initrd": guest.initrd, "cmdline": guest.cmdline + " virtkit.tick virtkit.write=MOVED",
            "disks": [{"size": "16M"}], "tags": ["role=web"]}  # fmt: skip
    with client_of(fleet, 0, "vkflt-shared") as vk1:
        vk1.vms.create(parse_vm_spec(spec), start=True)
    watch = TickWatch(log)
    try:
        wait_for_log(log, "TICK 20")
        dry = fleet.cli("vm", "migrate", name, "--to", "h2", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        plan = json.loads(dry.stdout)
        assert plan["live"] and plan["mode"] == "precopy" and plan["dirty_rate"] is not None
        assert [d["action"] for d in plan["disks"]] == ["shared"]
        moved = fleet.cli(
            "vm", "migrate", name, "--to", "h2", "--unsafe", "--max-downtime", "500", "--json"
        )
        assert moved.returncode == 0, moved.stderr
        result = json.loads(moved.stdout)
        assert result["live"] and result["state"] == "running" and result["target"] == "h2"
        last = max(ticks(log))
        wait_for_log(log, f"TICK {last + 20}")
    finally:
        watch.stop()
    # from tick 20 (before the migration) on: every tick, once, in order (the target's QEMU
    # starts the console log afresh: the watch saw them all as they came)
    numbers = sorted(n for n in watch.seen if n >= 20)
    assert numbers == list(range(20, numbers[-1] + 1)), "ticks lost"
    downtime = (result["downtime_ms"] or 0) / 1000
    # the longest pause between two ticks: the downtime, a tick's 100 ms, and TCG's jitter
    assert watch.largest_gap() < downtime + 1.5, (watch.largest_gap(), downtime)
    with client_of(fleet, 0) as vk1:
        assert not vk1.host.exists(name)
    with client_of(fleet, 1) as vk2:
        info = vk2.vms.get(name)
        assert info.state.value == "running" and info.persistent
        assert info.tags == ["role=web"]  # virtkit's metadata came along

    # to h3, which does not share the disk: refused without --copy-storage, then copied
    refused = fleet.cli("vm", "migrate", name, "--to", "h3")
    assert refused.returncode == 1 and "use --copy-storage" in refused.stderr, refused.stderr
    missing = fleet.cli("vm", "migrate", name, "--to", "h3", "--copy-storage")
    assert missing.returncode == 1 and "no active pool vkflt-shared" in missing.stderr
    with client_of(fleet, 1) as vk2:
        assert vk2.vms.get(name).state.value == "running"

    # a VM on h1's own pool, copied into h3's pool of that name at another path
    own = "vkflt-o"
    spec2 = {**spec, "name": own, "cmdline": guest.cmdline + " virtkit.write=COPIED",
             "disks": [{"size": "16M"}]}  # fmt: skip
    with client_of(fleet, 0, "vkflt-own") as vk1:
        vk1.vms.create(parse_vm_spec(spec2), start=True)
    wait_for_log(fleet.settings.console_log_dir / f"{own}-serial0.log", BOOT_MARKER)
    copied = fleet.cli("vm", "migrate", f"{own}@h1", "--to", "h3", "--copy-storage", "--json")
    assert copied.returncode == 0, copied.stderr
    disks = json.loads(copied.stdout)["plan"]["disks"]
    assert disks[0]["action"] == "copy" and disks[0]["dest"].startswith(str(base / "own3"))
    with client_of(fleet, 2) as vk3:
        assert vk3.vms.get(own).state.value == "running"
        shell = GuestShell(vk3, own)
        try:
            assert shell.read(1) == "COPIED"  # the data came along
        finally:
            shell.close()
        assert (vk3.vms.get(own).disks[0].source or "").startswith(str(base / "own3"))

    # the target's pool too small for the copy: refused before anything moves
    h1 = fleet.hosts[0]
    assert h1.daemon is not None and h1.daemon.proc is not None
    tiny_dir = base / "tiny1"
    tiny_dir.mkdir()
    subprocess.run(["nsenter", "-t", str(h1.daemon.proc.pid), "-m", "mount", "-t", "tmpfs",
                    "-o", "size=4m", "tmpfs", str(tiny_dir)], check=True)  # fmt: skip
    try:
        with client_of(fleet, 0) as vk1:  # (the disk the copy left on h1: source disks stay)
            vk1.pools.delete_volume("vkflt-own", f"{own}-disk0.qcow2")
            vk1.pools.delete_pool("vkflt-own")
            vk1.pools.create_pool(PoolSpec(name="vkflt-own", type="dir", path=str(tiny_dir)))
        full = fleet.cli("vm", "migrate", own, "--to", "h1", "--copy-storage")
        assert full.returncode == 1, full.stderr
        assert "the target's pool vkflt-own: 4 MiB free for 16 MiB" in full.stderr, full.stderr
        with client_of(fleet, 0) as vk1:
            assert not vk1.host.exists(own) and vk1.pools.list_volumes("vkflt-own") == []
            vk1.pools.delete_pool("vkflt-own")
    finally:
        subprocess.run(["nsenter", "-t", str(h1.daemon.proc.pid), "-m", "umount",
                        str(tiny_dir)], check=False)  # fmt: skip
    pool_on(fleet, 0, "vkflt-own", base / "own1")

    # offline: shut off, it moves with its disk copied through the volume streams
    with client_of(fleet, 2) as vk3:
        vk3.vms.stop(own)
    offline = fleet.cli("vm", "migrate", own, "--to", "h1", "--copy-storage", "--json")
    assert offline.returncode == 0, offline.stderr
    moved_off = json.loads(offline.stdout)
    assert not moved_off["live"] and moved_off["plan"]["disks"][0]["action"] == "upload"
    with client_of(fleet, 0) as vk1:
        assert vk1.vms.get(own).state.value == "shutoff"
        vk1.vms.start(own)
        shell = GuestShell(vk1, own)
        try:
            assert shell.read(1) == "COPIED"
        finally:
            shell.close()
    back = fleet.cli("vm", "migrate", own, "--to", "h3", "--copy-storage")
    assert back.returncode == 1 and "already has vkflt-o-disk0.qcow2" in back.stderr
    with client_of(fleet, 2) as vk3:
        vk3.pools.delete_volume("vkflt-own", f"{own}-disk0.qcow2")
    assert fleet.cli("vm", "migrate", own, "--to", "h3", "--copy-storage").returncode == 0
    with client_of(fleet, 0) as vk1:
        vk1.pools.delete_volume("vkflt-own", f"{own}-disk0.qcow2")

    # the target lacks the VM's network: refused before anything moves
    with client_of(fleet, 2) as vk3:
        vk3.networks.create(NetworkSpec(name="vkfltnet", kind="isolated"))
        vk3.nics.add(own, network="vkfltnet")
    nonet = fleet.cli("vm", "migrate", own, "--to", "h1", "--copy-storage")
    assert nonet.returncode == 1 and "the target has no network vkfltnet" in nonet.stderr
    with client_of(fleet, 0) as vk1:
        assert not vk1.host.exists(own)
        assert vk1.pools.list_volumes("vkflt-own") == []
    with client_of(fleet, 2) as vk3:
        assert vk3.vms.get(own).state.value == "running"
        vk3.vms.delete(own, force=True, remove_storage=True)
        vk3.networks.delete("vkfltnet")
    with client_of(fleet, 1) as vk2:
        vk2.vms.delete(name, force=True, remove_storage=True)
    with client_of(fleet, 0) as vk1:
        for left in vk1.pools.list_volumes("vkflt-own"):
            vk1.pools.delete_volume("vkflt-own", left.name)
    for i, pool in ((0, "vkflt-shared"), (1, "vkflt-shared"), (0, "vkflt-own"), (2, "vkflt-own")):
        with client_of(fleet, i) as vk:
            vk.pools.delete_pool(pool)


def tiny(guest: TinyGuest, name: str, *extra: str, memory: str = "128M",
         tags: list[str] | None = None) -> dict[str, object]:  # fmt: skip
    return {"name": name, "memory": memory, "vcpus": 1, "kernel": guest.kernel,
            "initrd": guest.initrd, "cmdline": " ".join([guest.cmdline, *extra]),
            "tags": tags or []}  # fmt: skip


def test_evacuation_moves_all_but_the_pinned_one(fleet: Fleet) -> None:
    registered(fleet)
    guest = build_tiny_guest(CACHE)
    names = ["vkflt-e1", "vkflt-e2", "vkflt-e3"]
    with client_of(fleet, 0) as vk1:
        for name in names:
            tags = ["place=gpu"] if name == "vkflt-e3" else []  # no host has that tag
            vk1.vms.create(parse_vm_spec(tiny(guest, name, tags=tags)), start=True)
    for name in names:
        wait_for_log(fleet.settings.console_log_dir / f"{name}-serial0.log", BOOT_MARKER)
    try:
        done = fleet.cli("host", "evacuate", "h1", "--parallel", "2", "--json", timeout=300)
        assert done.returncode == 1, done.stderr  # one could not move
        report = json.loads(done.stdout)
        items = {i["vm"]: i for i in report["items"]}
        assert report["moved"] == 2 and report["failed"] == 1
        assert items["vkflt-e1"]["ok"] and items["vkflt-e2"]["ok"]
        assert {items["vkflt-e1"]["target"], items["vkflt-e2"]["target"]} <= {"h2", "h3"}
        assert not items["vkflt-e3"]["ok"] and "lacks tag gpu" in items["vkflt-e3"]["detail"]
        hosts = {s["host"]["name"]: s for s in json.loads(fleet.cli("host", "list",
                                                                    "--json").stdout)}  # fmt: skip
        assert hosts["h1"]["host"]["maintenance"] and hosts["h1"]["vms_running"] == 1
        listing = fleet.cli("vm", "list").stdout.splitlines()[1:]
        where = {line.split()[1]: line.split()[0] for line in listing}
        assert where["vkflt-e3"] == "h1" and where["vkflt-e1"] in ("h2", "h3")
    finally:
        for i in range(3):
            with client_of(fleet, i) as vk:
                for name in names:
                    if vk.host.exists(name):
                        vk.vms.delete(name, force=True)
        assert fleet.cli("host", "maintenance", "h1", "off").returncode == 0


def test_faults_leave_the_vm_on_the_source_and_nothing_on_the_target(fleet: Fleet) -> None:
    registered(fleet)
    guest = build_tiny_guest(CACHE)
    name = "vkflt-f"
    log = fleet.settings.console_log_dir / f"{name}-serial0.log"
    spec = tiny(guest, name, "virtkit.dirty=48", memory="192M")
    with client_of(fleet, 0) as vk1:
        vk1.vms.create(parse_vm_spec(spec), start=True)
    try:
        wait_for_log(log, DIRTY_MARKER, timeout=120)
        # faster dirtying than the link: plain pre-copy gives up at its timeout ...
        plain = fleet.cli("vm", "migrate", name, "--to", "h2", "--bandwidth", "16",
                          "--timeout", "12", timeout=120)  # fmt: skip
        assert plain.returncode == 1 and "did not converge within 12 s" in plain.stderr, (
            plain.stderr
        )
        assert_on_source_only(fleet, name)
        # ... and --auto, seeing it coming, switches to post-copy and completes
        dry = json.loads(fleet.cli("vm", "migrate", name, "--to", "h2", "--bandwidth", "16",
                                   "--auto", "--dry-run", "--json").stdout)  # fmt: skip
        assert dry["mode"] == "postcopy" and not dry["converges"], dry
        auto = fleet.cli("vm", "migrate", name, "--to", "h2", "--bandwidth", "16", "--auto",
                         "--json", timeout=180)  # fmt: skip
        assert auto.returncode == 0, auto.stderr
        result = json.loads(auto.stdout)
        assert result["mode"] == "postcopy" and result["switched_to_postcopy"], result
        with client_of(fleet, 1) as vk2:
            assert vk2.vms.get(name).state.value == "running"
            # back to h1, and h1's libvirtd killed in the middle: the VM stays on h2
            proc = subprocess.Popen(
                [VIRTKIT, "vm", "migrate", name, "--to", "h1", "--bandwidth", "4"],
                env=fleet.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stats = vk2.host.lookup(name).handle.jobStats()
                if stats.get("data_processed", 0) > 1 << 20:
                    break
                time.sleep(0.2)
            h1 = fleet.hosts[0].daemon
            assert h1 is not None
            h1.kill()
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 1, err
            assert vk2.vms.get(name).state.value == "running"
            h1.start()
        with client_of(fleet, 0) as vk1:
            assert not vk1.host.exists(name)  # nothing left on the target
    finally:
        for i in range(2):
            with client_of(fleet, i) as vk:
                if vk.host.exists(name):
                    vk.vms.delete(name, force=True)


def assert_on_source_only(fleet: Fleet, name: str) -> None:
    with client_of(fleet, 0) as vk1:
        assert vk1.vms.get(name).state.value == "running"
    with client_of(fleet, 1) as vk2:
        assert not vk2.host.exists(name)
