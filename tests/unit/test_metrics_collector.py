"""The metrics collector on libvirt's test driver (``test:///default``, shared in-process:
what a test makes is named vkmet-* and removed), and its /proc readers on a /proc-shaped
directory."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtkit import Client, Settings
from virtkit.backend import procfs
from virtkit.backend.guest import reason_of
from virtkit.metrics.hostfacts import _selected
from virtkit.xml.domain import OS, Domain


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    settings = Settings(
        uri="test:///default",
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        console_log_dir=tmp_path / "logs",
        storage_pool_path=tmp_path / "images",
    )
    with Client(settings=settings) as made:
        yield made


def _domain_xml(name: str) -> str:
    """A small inactive domain for libvirt's test driver."""
    dom = Domain()
    dom.type = "test"
    dom.name = name
    dom.memory_kib = 65536
    os_el = OS()
    os_el.type = "hvm"
    dom.os = os_el
    return dom.to_xml()


def _states(client: Client) -> dict[str, str]:
    return {vm.name: str(vm.state) for vm in client.metrics.collect().vms}


def test_an_inactive_domain_is_seen_at_once_and_gone_at_once(client: Client) -> None:
    """Inactive domains' figures are kept between scrapes, yet a define or an undefine shows
    in the very next scrape (not after the 30 s age), whether libvirt's event has reached the
    event thread yet or not."""
    assert client.metrics.inactive_max_age == 30.0
    before = _states(client)
    assert before.get("test") == "running"  # the test driver's own domain
    name = "vkmet-" + secrets.token_hex(3)
    xml = _domain_xml(name)
    guest = client.host.define(xml)
    try:
        assert _states(client).get(name) == "shutoff"
        guest.start()
        states = [vm for vm in client.metrics.collect().vms if vm.name == name]
        assert [str(vm.state) for vm in states] == ["running"]  # not also a kept shutoff
        guest.destroy()
        assert _states(client).get(name) == "shutoff"
    finally:
        guest.undefine()
    assert name not in _states(client)


def test_a_host_that_does_not_answer_is_a_sample_not_an_error(tmp_path: Path) -> None:
    settings = Settings(uri="qemu+unix:///system?socket=" + str(tmp_path / "nothing"))
    with Client(settings=settings) as client:
        sample = client.metrics.collect()
    assert not sample.up and sample.error
    assert sample.facts.memory_total  # this machine's own facts still come


def test_state_reasons_are_libvirts_names() -> None:
    assert reason_of(3, 5) == "ioerror"  # paused, I/O error
    assert reason_of(5, 2) == "destroyed"  # shut off by force
    assert reason_of(4, 1) == "user"  # shutting down (not shutdown()'s flags' names)
    assert reason_of(99, 0) == "unknown"


def test_thp_mode_is_the_bracketed_choice() -> None:
    assert _selected("always [madvise] never\n") == "madvise"
    assert _selected("[always] madvise never") == "always"


def test_vcpu_threads_and_process_cpu_from_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "_PROC", tmp_path)
    tick = procfs.os.sysconf("SC_CLK_TCK")
    stat = "42 (qemu-system-x86) S " + " ".join(["0"] * 10) + f" {3 * tick} {tick} 0 0"
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(stat)
    for tid, comm, user in ((42, "qemu-system-x86", 9), (43, "CPU 0/KVM", 2), (44, "CPU 1/TCG", 5),
                            (45, "IO mon_iothread", 7)):  # fmt: skip
        task = tmp_path / "42" / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "comm").write_text(comm + "\n")
        (task / "stat").write_text(
            f"{tid} ({comm}) S " + " ".join(["0"] * 10) + f" {user * tick} 0 0 0"
        )
    assert procfs.process_cpu_seconds(42) == (3.0, 1.0)
    assert procfs.vcpu_seconds(42) == {0: 2.0, 1: 5.0}  # the vCPU threads only
    assert procfs.process_cpu_seconds(7) is None


def test_several_hosts_in_one_scrape_each_series_names_its_host(tmp_path: Path) -> None:
    """Two hosts that give the same hostname (two test drivers) are told apart by URI."""
    from prometheus_client.parser import text_string_to_metric_families

    from virtkit.metrics.prometheus import VirtkitCollector

    other = tmp_path / "other.xml"
    xml = _domain_xml("vkmet-other")
    other.write_text(
        "<node><cpu><mhz>1000</mhz></cpu>" + xml + "</node>"
    )  # the test driver's node file: one inactive domain
    uris = ["test:///default", f"test://{other}"]
    clients = [
        Client(settings=Settings(uri=u, state_dir=tmp_path / f"s{i}", cache_dir=tmp_path / f"c{i}"))
        for i, u in enumerate(uris)
    ]
    try:
        text = VirtkitCollector([c.metrics for c in clients]).render().decode()
    finally:
        for c in clients:
            c.close()
    hosts: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == "virtkit_domain_state":
                hosts.setdefault(sample.labels["host"], set()).add(sample.labels["domain"])
            if family.name not in ("virtkit_build_info", "virtkit_scrape_duration_seconds"):
                assert "host" in sample.labels, sample
    assert "test" in hosts["test:///default"]
    assert hosts[f"test://{other}"] == {"vkmet-other"}


def test_a_failure_in_a_scrape_is_a_sample_under_the_same_host_label(tmp_path: Path) -> None:
    """A bug of ours (not a libvirt error) in a worker thread still gives a sample, with the
    host label libvirt gave while it answered, and no VM figures (the fault seam injects it)."""
    from virtkit.backend.connection import Connection
    from virtkit.backend.faults import FaultyHost
    from virtkit.backend.host import LibvirtHost
    from virtkit.metrics.prometheus import VirtkitCollector

    faults: dict[str, BaseException] = {}
    settings = Settings(uri="test:///default", state_dir=tmp_path / "s", cache_dir=tmp_path / "c")
    host = FaultyHost(LibvirtHost(Connection(settings.uri)), faults)
    name = "vkmet-" + secrets.token_hex(3)
    xml = _domain_xml(name)
    with Client(settings=settings, host=host) as client:
        guest = client.host.define(xml)  # an inactive one: its families are kept
        collector = VirtkitCollector([client.metrics])
        try:
            assert f'domain="{name}"' in collector.render().decode()
            assert f'domain="{name}"' in collector.render().decode()  # (the kept families)
            good = client.metrics.collect()
            faults["info"] = RuntimeError("a bug")  # in the per-domain worker
            text = collector.render().decode()
            bad = client.metrics.collect()
        finally:
            faults.clear()
            guest.undefine()
    assert good.up and good.hostname
    assert not bad.up and "a bug" in (bad.error or "")
    assert bad.vms == [] and bad.hostname == good.hostname
    assert f'libvirt_up{{host="{good.hostname}"}} 0' in text
    assert "virtkit_domain_state{" not in text  # no kept inactive domains either


def test_the_exporter_listens_on_ipv6_too(client: Client) -> None:
    import threading
    import urllib.request

    from virtkit.metrics.http import exporter_server

    server = exporter_server([client.metrics], None, ("::1", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10) as answer:
            assert b"libvirt_up" in answer.read()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("listen", ["nope", "127.0.0.1:0x10", "127.0.0.1:70000", ":"])
def test_a_bad_listen_address_is_a_clear_error(listen: str) -> None:
    from click.testing import CliRunner

    from virtkit.cli.main import cli

    result = CliRunner().invoke(cli, ["-c", "test:///default", "exporter", "--listen", listen])
    assert result.exit_code == 2
    assert "is not ADDRESS:PORT" in result.output
