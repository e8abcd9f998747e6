"""``virtkit ksm ...``: kernel samepage merging on this host."""

from __future__ import annotations

import click

from virtkit.cli import render
from virtkit.cli.main import State
from virtkit.errors import InvalidInput

pass_state = click.make_pass_decorator(State)


@click.group()
def ksm() -> None:
    """KSM: memory saved, per host and per VM; enable, disable, tune."""


@ksm.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
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
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
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
        ("  zero pages", f"{result.zero_pages} (untouched memory reads as zero too)"),
        ("Speed", f"{result.gib_per_second:.2f} GiB/s ({result.seconds:.2f} s)"),
    ])  # fmt: skip
