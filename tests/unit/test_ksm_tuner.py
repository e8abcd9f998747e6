"""The tuning daemon against a fake KSM directory and libvirt's test driver: it applies only what
changed, logs each reason, holds one lock per KSM directory, leaves or restores the settings,
records history, and the CLI runs it in the foreground and the background."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtkit import Client, Settings
from virtkit.errors import InvalidInput, InvalidState, NotFound
from virtkit.ksm.history import KsmHistory
from virtkit.ksm.lock import lock_path, running_pid
from virtkit.ksm.policies import Decision, Sample
from virtkit.ksm.report import plot
from virtkit.ksm.service import KsmService
from virtkit.ksm.sysfs import KsmSysfs
from virtkit.ksm.tuner import Tuner

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
FILES = {
    "run": "0", "pages_to_scan": "100", "sleep_millisecs": "20", "max_page_sharing": "256",
    "merge_across_nodes": "1", "use_zero_pages": "0", "pages_shared": "5", "pages_sharing": "40",
    "pages_volatile": "3", "general_profit": "150000", "full_scans": "3", "pages_scanned": "900",
}  # fmt: skip


class Scripted:
    """A policy that returns the decisions it is given, in order (the daemon's logic alone)."""

    name = "scripted"

    def __init__(self, *decisions: Decision) -> None:
        self.decisions = list(decisions)
        self.seen: list[Sample] = []

    def step(self, sample: Sample) -> Decision:
        self.seen.append(sample)
        return self.decisions.pop(0) if self.decisions else Decision(None, None, None, "idle")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ksm"
    root.mkdir()
    for name, value in FILES.items():
        (root / name).write_text(value + "\n")
    return root


@pytest.fixture
def ksm(tmp_path: Path, root: Path) -> Iterator[KsmService]:
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    client = Client(settings=Settings(uri=f"test://{node}", cache_dir=tmp_path / "c"))
    yield KsmService(client.host, KsmSysfs(root))
    client.close()


def values(root: Path) -> dict[str, str]:
    return {n: (root / n).read_text().strip() for n in ("run", "pages_to_scan", "sleep_millisecs")}


def test_applies_only_what_changed_and_logs_why(
    ksm: KsmService, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = Scripted(
        Decision(True, 5000, 10, "merging pays"),
        Decision(True, 5000, 10, "still growing"),
        Decision(True, 100, 10, "stalled"),
    )
    tuner = Tuner(ksm.host, ksm.sysfs, policy, interval=0.01, lock_dir=tmp_path / "locks")
    caplog.set_level(logging.INFO, logger="virtkit.ksm")
    tuner.run(threading.Event(), max_steps=3)
    reasons = [r.getMessage() for r in caplog.records if r.name == "virtkit.ksm.tuner"]
    assert reasons[1] == (
        "merging pays [pages_to_scan 100 -> 5000; sleep_millisecs 20 -> 10; run 0 -> 1]"
    )
    assert reasons[2] == "still growing [no change]"
    assert reasons[3] == "stalled [pages_to_scan 5000 -> 100]"
    assert "stays as the policy last set it: run=1, pages_to_scan=100" in reasons[-1]
    assert values(root) == {"run": "1", "pages_to_scan": "100", "sleep_millisecs": "10"}
    first = policy.seen[0]
    assert (first.profit, first.pages_sharing, first.full_scans, first.run) == (150000, 40, 3, "0")
    assert first.mem_total > 0 and first.pages_scanned == 900


def test_restore_puts_back_what_it_found(ksm: KsmService, root: Path, tmp_path: Path) -> None:
    tuner = Tuner(
        ksm.host, ksm.sysfs, Scripted(Decision(True, 5000, 10, "go")), interval=0.01, restore=True,
        lock_dir=tmp_path / "locks",
    )  # fmt: skip
    message = tuner.run(threading.Event(), max_steps=1)
    assert values(root) == {"run": "0", "pages_to_scan": "100", "sleep_millisecs": "20"}
    assert "restored what it found: run=0, pages_to_scan=100, sleep_millisecs=20" in message


def test_one_daemon_per_ksm_directory(ksm: KsmService, tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    stop = threading.Event()
    first = Tuner(ksm.host, ksm.sysfs, Scripted(), interval=0.05, lock_dir=locks)
    thread = threading.Thread(target=first.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while running_pid(lock_path(ksm.sysfs.root, locks)) != os.getpid():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = Tuner(ksm.host, ksm.sysfs, Scripted(), lock_dir=locks)
        with pytest.raises(
            InvalidState, match=f"already running on this host \\(pid {os.getpid()}"
        ):
            second.run(threading.Event(), max_steps=1)
        assert second.steps == 0
    finally:
        stop.set()
        thread.join(5)
    assert running_pid(lock_path(ksm.sysfs.root, locks)) is None  # released on stop
    Tuner(ksm.host, ksm.sysfs, Scripted(), lock_dir=locks).run(threading.Event(), max_steps=1)


def test_bad_policy_budget_and_interval(ksm: KsmService) -> None:
    with pytest.raises(InvalidInput, match="unknown KSM policy 'fast'"):
        ksm.tuner("fast")
    with pytest.raises(InvalidInput, match="percentage of one core"):
        ksm.tuner("adaptive", cpu_budget=150)
    with pytest.raises(InvalidInput, match="interval must be positive"):
        ksm.tuner("adaptive", interval=0)


def test_history_records_samples_and_the_report_draws_them(ksm: KsmService, tmp_path: Path) -> None:
    history = KsmHistory(tmp_path / "h.sqlite")
    for t, profit, cpu in ((100.0, 0, 10.0), (110.0, 50 << 20, 11.0), (120.0, 80 << 20, 11.5)):
        history.add(
            Sample(time=t, profit=profit, pages_sharing=profit // 4096, ksmd_cpu=cpu,
                   vms={"vm1": (profit // 8192, profit // 2), "vm2": (0, 0)})
        )  # fmt: skip
    points = history.points()
    assert [p.saved for p in points] == [0, 50 << 20, 80 << 20]
    assert points[0].ksmd_cpu_share is None
    assert points[1].ksmd_cpu_share == pytest.approx(0.1)
    assert points[2].ksmd_cpu_share == pytest.approx(0.05)
    assert [p.saved for p in history.points(since=115)] == [80 << 20]
    vm1 = history.vm_points(names=["vm1"])
    assert [p.saved for p in vm1] == [0, 25 << 20, 40 << 20]
    history.prune(now=120 + 31 * 86400)
    assert history.points() == []
    for t in (1.0, 2.0):
        history.add(Sample(time=t, profit=int(t) << 20, vms={"vm1": (1, 2)}))
    png, svg = tmp_path / "k.png", tmp_path / "k.svg"
    plot(history.points(), history.vm_points(), png)
    plot(history.points(), history.vm_points(), svg)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:1000]
    with pytest.raises(InvalidInput, match="PNG or SVG"):
        plot(history.points(), [], tmp_path / "k.pdf")
    with pytest.raises(NotFound, match="no KSM samples"):
        plot([], [], png)
    history.close()


def cli(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    env = {
        **os.environ, "VIRTKIT_URI": f"test://{node}", "VIRTKIT_CONFIG": "/nonexistent",
        "VIRTKIT_KSM_ROOT": str(root), "VIRTKIT_STATE_DIR": str(tmp_path / "state"),
        "VIRTKIT_CACHE_DIR": str(tmp_path / "cache"),
    }  # fmt: skip
    return subprocess.run(
        [VIRTKIT, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_tune_history_and_report(root: Path, tmp_path: Path) -> None:
    ran = cli(root, tmp_path, "--log-json", "ksm", "tune", "--policy", "ksmtuned", "--steps", "2",
              "--interval", "0.1", "--restore")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    logs = [json.loads(line) for line in ran.stderr.splitlines()]
    decisions = [entry["virtkit"]["ksm"] for entry in logs if "virtkit" in entry]
    assert len(decisions) == 2 and decisions[0]["policy"] == "ksmtuned"
    assert "stop KSM" in decisions[0]["reason"]  # an idle test machine: ksmtuned stops it
    assert "restored what it found" in logs[-1]["message"]
    shown = cli(root, tmp_path, "ksm", "history", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [p["saved"] for p in json.loads(shown.stdout)["host"]] == [150000, 150000]
    table = cli(root, tmp_path, "ksm", "history")
    assert "PAGES" in table.stdout and "146.5 KiB" in table.stdout, table.stdout
    chart = tmp_path / "ksm.svg"
    drawn = cli(root, tmp_path, "ksm", "report", "--plot", str(chart))
    assert drawn.returncode == 0 and "2 samples" in drawn.stdout, drawn.stderr
    assert chart.exists()
    bad = cli(root, tmp_path, "ksm", "history", "--since", "yesterday")
    assert bad.returncode == 1 and "duration like 90s" in bad.stderr


def test_cli_background_daemon_and_stop(root: Path, tmp_path: Path) -> None:
    started = cli(root, tmp_path, "ksm", "tune", "--policy", "observe", "--background",
                  "--interval", "0.2")  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "KSM tuning daemon running (pid" in started.stdout
    try:
        again = cli(root, tmp_path, "ksm", "tune", "--policy", "observe")
        assert again.returncode == 1 and "already running on this host" in again.stderr
    finally:
        stopped = cli(root, tmp_path, "ksm", "tune", "--stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    log = (tmp_path / "state" / "ksm-tune.log").read_text()
    assert "observe: no change" in log and "stays as the policy last set it" in log
    assert values(root) == {"run": "0", "pages_to_scan": "100", "sleep_millisecs": "20"}
    none = cli(root, tmp_path, "ksm", "tune", "--stop")
    assert none.returncode == 1 and "no KSM tuning daemon is running" in none.stderr
