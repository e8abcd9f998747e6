"""``virtkit tune ...``: the tuning advisor."""

from __future__ import annotations

import sys
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state

PROFILES = ("latency", "throughput", "density")
profile_option = click.option(
    "--profile",
    "-p",
    required=True,
    type=click.Choice(PROFILES),
    help="latency: dedicated whole cores, hugepages, locked memory; throughput: node-local "
    "pins, shared cores; density: floating vCPUs, KSM and balloon, migratable CPU.",
)
WHEN = {"live": "live", "next_boot": "next boot", "manual": "by hand"}


@click.group()
def tune() -> None:
    """Tune a VM (pinning, NUMA, hugepages, I/O) or the host for a profile, with reasons.

    `tune check` shows the plan and the diff of the VM's definition; `tune apply` carries it
    out (live where the VM runs and libvirt can, else at the next boot); `tune host` the
    host's side (hugepages, THP, KSM, CPU governor) with the command that reverts each.
    """


def _print_report(report: Any, *, diff: bool = True) -> None:
    render.fields(
        [
            ("VM", f"{report.vm} ({report.domain_type}, {'running' if report.running else 'off'})"),
            ("Profile", report.profile),
            ("NUMA node", "-" if report.node is None else report.node),
            ("vCPU pins", ", ".join(f"{v}->{c}" for v, c in report.vcpu_pins.items()) or "-"),
            ("Emulator", report.emulator_cpus or "-"),
            ("I/O thread", report.iothread_cpus or "-"),
            ("Memory", report.numa or "-"),
            ("Hugepages", report.hugepages or "-"),
        ]
    )
    if report.changes:
        click.echo("\nChanges:")
        for change in report.changes:
            when = change.outcome or WHEN[change.when]
            click.echo(f"  [{when}] {change.area}: {change.summary}")
            click.echo(f"      why: {change.reason}")
    else:
        click.echo("\nNo changes: the VM already matches the profile.")
    for warning in report.warnings:
        click.echo(f"note: {warning}")
    if diff and report.diff:
        click.echo("\n" + report.diff, nl=False)


@tune.command()
@click.argument("name")
@profile_option
@json_option
@pass_state
def check(state: State, name: str, profile: str, as_json: bool) -> None:
    """Show the tuning plan of VM NAME, each change's reason, and the diff of its definition."""
    report = state.client.tuning.check(name, profile)
    if as_json:
        render.print_json(report)
        return
    _print_report(report)


@tune.command()
@click.argument("name")
@profile_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def apply(state: State, name: str, profile: str, yes: bool, as_json: bool) -> None:
    """Apply the tuning plan to VM NAME: live where possible, else at its next boot."""
    from virtkit.errors import InvalidInput

    tuning = state.client.tuning
    if not yes:
        plan = tuning.check(name, profile)
        if not plan.diff:
            click.echo("No changes: the VM already matches the profile.", err=True)
            return
        click.echo(plan.diff, nl=False, err=True)
        if not sys.stdin.isatty():
            raise InvalidInput(
                "refusing to change the VM's definition without confirmation: add --yes",
                code="confirmation_required",
            )
        click.confirm(f"Apply the {profile} profile to {name}?", abort=True, err=True)
    report = tuning.apply(name, profile)
    if as_json:
        render.print_json(report)
        return
    _print_report(report, diff=False)


@tune.command()
@click.option(
    "--profile",
    "-p",
    default="virtualization",
    show_default=True,
    type=click.Choice(["virtualization"]),
    help="The host profile.",
)
@click.option("--apply", "do_apply", is_flag=True, help="Write the changes (this machine only).")
@json_option
@pass_state
def host(state: State, profile: str, do_apply: bool, as_json: bool) -> None:
    """The host side: hugepages for defined VMs, THP, KSM, CPU governor (with revert commands)."""
    tuning = state.client.tuning
    report = tuning.host_apply(profile) if do_apply else tuning.host_check(profile)
    if as_json:
        render.print_json(report)
        return
    for knob in report.knobs:
        if do_apply:
            status = "changed" if knob.applied else f"FAILED: {knob.error}"
        else:
            status = "would change"
        click.echo(f"[{status}] {knob.name}: {knob.current} -> {knob.wanted}  ({knob.path})")
        click.echo(f"    why: {knob.reason}")
        click.echo(f"    revert: {knob.revert}")
    for note in report.notes:
        click.echo(f"note: {note}")
