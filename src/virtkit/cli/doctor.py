"""``virtkit doctor``: what is wrong with this host or a VM, why, and the fix."""

from __future__ import annotations

import sys
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state

MARKS = {"ok": "ok", "info": "info", "warning": "WARN", "error": "FAIL"}


def _print_report(report: Any, *, show_ok: bool) -> None:
    for item in report.findings:
        severity = str(item.severity)
        if severity == "ok" and not show_ok:
            continue
        click.echo(f"[{MARKS[severity]:>4}] {item.subject}: {item.summary}")
        if severity != "ok":
            if item.explanation:
                click.echo(f"       why: {item.explanation}")
            if item.fix:
                fixable = " (--fix applies it)" if item.fixable else ""
                click.echo(f"       fix: {item.fix}{fixable}")
    counts = {s: 0 for s in MARKS}
    for item in report.findings:
        counts[str(item.severity)] += 1
    click.echo(
        f"{report.subject} ({report.uri}): {counts['error']} errors, {counts['warning']} "
        f"warnings, {counts['info']} notes, {counts['ok']} ok"
        + ("" if show_ok else " (--all shows the ok ones)")
    )


def _fix(
    state: State, report: Any, yes: bool, only: tuple[str, ...], err: bool = False
) -> list[Any]:
    fixable = [
        f
        for f in report.findings
        if f.fixable
        and str(f.severity) != "ok"
        and (not only or any(f.check == o or f.check.startswith(o + ".") for o in only))
    ]
    if not fixable:
        click.echo("nothing that --fix can repair", err=err)
        return []
    click.echo("--fix will:", err=err)
    for item in fixable:
        click.echo(f"  - {item.subject}: {item.fix}", err=err)
    if not yes:
        click.confirm("apply these fixes?", abort=True, err=err)
    results: list[Any] = state.client.doctor.apply_fixes(fixable)
    for result in results:
        mark = "fixed" if result.applied else "NOT fixed"
        click.echo(f"{mark}: {result.subject}: {result.message}", err=err)
    return results


def _finish(report: Any, as_json: bool, show_ok: bool, fixes: list[Any] | None) -> None:
    if as_json:
        data = report.model_dump(mode="json")
        data["worst"] = str(report.worst)
        if fixes is not None:
            data["fixes"] = [r.model_dump(mode="json") for r in fixes]
        render.print_json(data)
    else:
        _print_report(report, show_ok=show_ok)
    if str(report.worst) == "error":
        sys.exit(1)


def _check(
    state: State,
    make_report: Any,
    as_json: bool,
    show_ok: bool,
    fix: bool,
    yes: bool,
    only: tuple[str, ...],
) -> None:
    """Report; with --fix show the problems, apply the fixes, and report again."""
    report = make_report()
    fixes = None
    if fix:
        if not as_json:
            _print_report(report, show_ok=False)
        fixes = _fix(state, report, yes, only, err=as_json)
        report = make_report()
    _finish(report, as_json, show_ok, fixes)


common = [
    json_option,
    click.option("--all", "show_ok", is_flag=True, help="Show the checks that passed too."),
    click.option("--fix", is_flag=True, help="Apply the safe fixes (after confirmation)."),
    click.option("--yes", "-y", is_flag=True, help="Do not ask before --fix applies fixes."),
    click.option(
        "--only",
        multiple=True,
        metavar="CHECK",
        help="With --fix: only the fixes of these checks (e.g. pool.path; repeatable).",
    ),
]


def _options(fn: Any) -> Any:
    for option in reversed(common):
        fn = option(fn)
    return fn


@click.group(invoke_without_command=True)
@_options
@pass_state
@click.pass_context
def doctor(
    ctx: click.Context,
    state: State,
    as_json: bool,
    show_ok: bool,
    fix: bool,
    yes: bool,
    only: tuple[str, ...],
) -> None:
    """Check the host (or a VM: doctor vm NAME): findings, why they matter, and the fix.

    Covers what virt-host-validate checks, whether KVM really works, versions, daemons,
    pools, hugepages, THP and KSM, NUMA, memory pressure, AppArmor, clocks and networks.
    Exits 1 when an error remains.
    """
    if ctx.invoked_subcommand is not None:
        return
    _check(state, state.client.doctor.host_report, as_json, show_ok, fix, yes, only)


@doctor.command("vm")
@click.argument("name")
@_options
@click.option(
    "--try-start",
    is_flag=True,
    help="Start a shut-off VM paused (no guest code runs) and stop it again, to hear libvirt.",
)
@pass_state
def vm(
    state: State,
    name: str,
    as_json: bool,
    show_ok: bool,
    fix: bool,
    yes: bool,
    only: tuple[str, ...],
    try_start: bool,
) -> None:
    """Why a VM will not start or is paused, and whether its disks, agent, console, network
    and memory are sound."""

    def report() -> Any:
        return state.client.doctor.vm_report(name, try_start=try_start)

    _check(state, report, as_json, show_ok, fix, yes, only)
