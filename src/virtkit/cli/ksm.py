"""``virtkit ksm ...``: kernel samepage merging on this host."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state
from virtkit.errors import InvalidInput, InvalidState
from virtkit.specs.units import parse_since


@click.group()
def ksm() -> None:
    """KSM: memory saved, per host and per VM; enable, disable, tune."""


@ksm.command()
@json_option
@pass_state
def status(state: State, as_json: bool) -> None:
    """Run mode, settings, pages shared and sharing, memory saved, ksmd CPU, and per VM."""
    report = state.client.ksm.status()
    if as_json:
        render.print_json(report)
        return
    share = f" ({report.saved_share:.1%} of guest memory)" if report.saved_share else ""
    cpu = report.ksmd_cpu_seconds
    render.fields([
        ("Run", report.run),
        ("Saved", f"{render.size(report.saved)}{share}"),
        ("Pages shared", report.pages_shared), ("Pages sharing", report.pages_sharing),
        ("Pages unshared", report.pages_unshared), ("Pages volatile", report.pages_volatile),
        ("Full scans", report.full_scans),
        ("ksmd CPU", "-" if cpu is None else f"{cpu:.1f} s since boot"),
        ("Settings", ", ".join(f"{k}={v}" for k, v in sorted(report.settings.items()))),
    ])  # fmt: skip
    if report.vms:
        click.echo("VMs:")
        render.table(
            ["NAME", "PID", "KSM", "MERGING PAGES", "SAVED", "MEMORY"],
            [[v.name, str(v.pid or "-"), "off" if v.opted_out else "on",
              "-" if v.merging_pages is None else str(v.merging_pages), render.size(v.profit),
              render.size(v.memory)] for v in report.vms],
        )  # fmt: skip


@ksm.command()
@pass_state
def enable(state: State) -> None:
    """Start KSM scanning (run=1)."""
    state.client.ksm.enable()
    click.echo("KSM running")


@ksm.command()
@pass_state
def disable(state: State) -> None:
    """Stop scanning (run=0); merged pages stay merged until 'unmerge'."""
    state.client.ksm.disable()
    click.echo("KSM stopped (pages merged so far stay merged: 'virtkit ksm unmerge' splits them)")


@ksm.command()
@pass_state
def unmerge(state: State) -> None:
    """Split every merged page back (run=2), wait for it, leave KSM stopped."""
    state.client.ksm.unmerge()
    click.echo("KSM unmerged every page and is stopped")


@ksm.command("set")
@click.argument("pairs", nargs=-1, required=True)
@pass_state
def set_(state: State, pairs: tuple[str, ...]) -> None:
    """Set KSM settings: NAME=VALUE ... (pages_to_scan, sleep_millisecs, max_page_sharing,
    merge_across_nodes, use_zero_pages, smart_scan, advisor_mode, run)."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"expected NAME=VALUE, got {pair!r}", code="invalid_ksm_value")
        values[name.strip()] = value
    for line in state.client.ksm.set(values):
        click.echo(line)


@ksm.command("estimate")
@click.argument("vms", nargs=-1)
@json_option
@pass_state
def estimate_(state: State, vms: tuple[str, ...], as_json: bool) -> None:
    """Predict what KSM would merge across running VMs (all, or the ones named), before it
    runs: their guest memory is hashed page by page (as root)."""
    result = state.client.ksm.estimate(list(vms) or None)
    if as_json:
        render.print_json(result)
        return
    render.fields([
        ("VMs", ", ".join(result.vms) or "-"),
        ("Memory read", f"{render.size(result.pages * 4096)} ({result.pages} pages)"),
        ("Would save", f"{render.size(result.saved)} ({result.share:.1%})"),
        ("  duplicates", f"{render.size(result.saved_nonzero)} ({result.duplicate_pages} pages)"),
        ("  zero pages", f"{result.zero_pages} written by the guests (untouched memory skipped)"),
        ("Speed", f"{result.gib_per_second:.2f} GiB/s ({result.seconds:.2f} s)"),
    ])  # fmt: skip


def _history(state: State) -> Any:
    """The KSM history store (a ``KsmHistory``; close it)."""
    return state.client.ksm.history()


@ksm.command()
@click.option(
    "--policy", type=click.Choice(["adaptive", "ksmtuned", "observe"]),
    help="adaptive (virtkit's), ksmtuned (the ksmtuned algorithm), observe (record only). "
    "Default: ksm_policy in the config, else adaptive.",
)  # fmt: skip
@click.option("--interval", type=float, help="Seconds between decisions (default 10).")
@click.option("--cpu-budget", type=float, help="adaptive: percent of one core for ksmd (5).")
@click.option("--restore", is_flag=True, help="On stop, put back the settings found at start.")
@click.option("--no-history", is_flag=True, help="Do not record samples for 'ksm history'.")
@click.option("--background", is_flag=True, help="Run as a daemon; logs go to STATE_DIR.")
@click.option("--stop", "stop_it", is_flag=True, help="Stop the daemon running on this host.")
@click.option("--steps", type=int, hidden=True, help="Stop after this many decisions.")
@pass_state
def tune(
    state: State, policy: str | None, interval: float | None, cpu_budget: float | None,
    restore: bool, no_history: bool, background: bool, stop_it: bool, steps: int | None,
) -> None:  # fmt: skip
    """Tune KSM continuously: collect, decide, apply only what changed, log each reason.

    Runs in the foreground until Ctrl+C or SIGTERM (or in the background with --background;
    --stop ends it). On stop KSM stays as the policy last set it, unless --restore."""
    settings = state.client.settings
    if stop_it:
        pid = state.client.ksm.stop_tuner()
        click.echo(f"KSM tuning daemon (pid {pid}) stopped; see its log for what it left")
        return
    if background:
        _background(state, settings.state_dir / "ksm-tune.log")
        return
    chosen = policy or settings.ksm_policy
    default_interval = 60.0 if chosen == "ksmtuned" else 10.0  # ksmtuned's own default
    tuner = state.client.ksm.tuner(
        chosen,
        interval=interval or settings.ksm_interval or default_interval,
        cpu_budget=cpu_budget or settings.ksm_cpu_budget,
        restore=restore,
        history=None if no_history else _history(state),
    )
    logger = logging.getLogger("virtkit.ksm")
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    for handler in logging.getLogger().handlers:
        if type(handler.formatter) is logging.Formatter:  # plain text: add the time
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    tuner.run(stop, max_steps=steps)


def _background(state: State, log_file: Path) -> None:
    argv = [a for a in sys.argv[1:] if a != "--background"]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "virtkit", *argv], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 15
    while state.client.ksm.tuner_pid() != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise InvalidState(
                f"the KSM tuning daemon did not start: {tail[0]}", code="ksm_tune_failed"
            )
        time.sleep(0.1)
    click.echo(f"KSM tuning daemon running (pid {proc.pid}); log: {log_file}")


@ksm.command()
@click.option("--since", help="Only samples newer than this: 90s, 30m, 6h, 7d.")
@click.option("--vm", "vms", multiple=True, help="Per-VM samples of this VM (repeatable).")
@json_option
@pass_state
def history(state: State, since: str | None, vms: tuple[str, ...], as_json: bool) -> None:
    """KSM samples recorded by 'ksm tune' (any policy; 'observe' only records)."""
    samples = state.client.ksm.samples(parse_since(since), vms)
    points, vm_points = samples.host, samples.vms
    if as_json:
        render.print_json(samples)
        return
    if not points:
        click.echo("no KSM samples recorded yet: run 'virtkit ksm tune' (--policy observe "
                   "only records)")  # fmt: skip
        return
    render.table(
        ["TIME", "RUN", "PAGES", "SLEEP", "SAVED", "SHARING", "VOLATILE", "KSMD CPU"],
        [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.time)), p.run,
          str(p.pages_to_scan), f"{p.sleep_millisecs}ms", render.size(p.saved),
          str(p.pages_sharing), str(p.pages_volatile),
          "-" if p.ksmd_cpu_share is None else f"{p.ksmd_cpu_share:.1%}"] for p in points],
    )  # fmt: skip
    if vm_points:
        click.echo("VMs:")
        render.table(
            ["TIME", "NAME", "MERGING PAGES", "SAVED"],
            [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.time)), p.name,
              str(p.merging_pages), render.size(p.saved)] for p in vm_points],
        )  # fmt: skip


@ksm.command()
@click.option("--plot", "plot_file", type=click.Path(path_type=Path), required=True,
              help="Write the chart here: .png or .svg.")  # fmt: skip
@click.option("--since", help="Only samples newer than this: 90s, 30m, 6h, 7d.")
@pass_state
def report(state: State, plot_file: Path, since: str | None) -> None:
    """Chart memory saved, pages sharing and ksmd CPU over time, per host and per VM."""
    samples = state.client.ksm.plot(plot_file, since=parse_since(since))
    click.echo(f"wrote {plot_file} ({samples} samples)")
