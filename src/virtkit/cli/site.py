"""``virtkit plan|apply|drift -f site.yaml`` and ``virtkit site schema``: a site as code."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state

SIGNS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "red"),
    "delete": ("-", "red"),
    "conflict": ("!", "red"),
}
file_option = click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The site file (YAML; schema: virtkit site schema).",
)
prune_option = click.option(
    "--prune", is_flag=True, help="Also delete what this site manages and the file no longer has."
)


def _line(change: Any) -> str:
    sign, colour = SIGNS[change.action]
    head = f"  {sign} {change.kind} {change.name} on {change.host}"
    body = "; ".join(change.details)
    text = f"{head}: {body}" if body else head
    if change.restart:
        text += " [restart needed for part of it]"
    if change.destroys and change.action in ("delete", "replace"):
        text += f"\n      destroys: {', '.join(change.destroys)}"
    return click.style(text, fg=colour)


def _print_plan(plan: Any, source: str) -> None:
    if plan.empty:
        click.echo(f"No changes: the hosts match {source} (site {plan.site}).")
    else:
        click.echo(f"Plan for site {plan.site}:")
        for change in plan.changes:
            click.echo(_line(change))
        counts = [
            f"{plan.count(a)} to {a}"
            for a in ("create", "update", "replace", "delete")
            if plan.count(a)
        ]
        conflicts = plan.count("conflict")
        if conflicts:
            counts.append(click.style(f"{conflicts} conflict(s): apply refuses", fg="red"))
        click.echo("Plan: " + ", ".join(counts) + ".")
    if plan.pruned:
        click.echo(
            f"{plan.pruned} resource(s) of site {plan.site} are no longer in the file: "
            "--prune deletes them."
        )
    if plan.unmanaged:
        by_kind: dict[str, list[str]] = {}
        for item in plan.unmanaged:
            by_kind.setdefault(item.kind, []).append(item.name)
        listed = "; ".join(
            f"{len(v)} {k}(s): {', '.join(sorted(v)[:8])}" + (", ..." if len(v) > 8 else "")
            for k, v in sorted(by_kind.items())
        )
        click.echo(f"Not of this site (never touched): {listed}")


@click.command()
@file_option
@prune_option
@json_option
@click.option("--exit-code", is_flag=True, help="Exit 2 when there are changes (0: none), for CI.")
@pass_state
def plan(state: State, path: str, prune: bool, as_json: bool, exit_code: bool) -> None:
    """Show what apply would change on the site's hosts to match the site file."""
    sites = state.client.sites
    result = sites.plan(sites.load(path), prune=prune)
    if as_json:
        render.print_json(result)
    else:
        _print_plan(result, path)
    if exit_code and not result.empty:
        sys.exit(2)


@click.command()
@file_option
@prune_option
@json_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting or replacing.")
@click.option(
    "--allow-replace", is_flag=True, help="Allow replacing VMs, pools or networks (destroys them)."
)
@click.option(
    "--parallel",
    default=4,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Steps run side by side where they do not depend on each other.",
)
@pass_state
def apply(
    state: State,
    path: str,
    prune: bool,
    as_json: bool,
    yes: bool,
    allow_replace: bool,
    parallel: int,
) -> None:
    """Make the site's hosts match the site file: pools and networks, then templates, then
    VMs; rolls back what it created when a step fails; a second apply does nothing."""
    sites = state.client.sites
    site = sites.load(path)
    out = sys.stderr if as_json else sys.stdout

    def confirm(planned: Any) -> bool:
        if not as_json:
            _print_plan(planned, path)
        destructive = [c for c in planned.changes if c.action in ("delete", "replace")]
        if not destructive or yes:
            return True
        if not sys.stdin.isatty():
            from virtkit.errors import InvalidState

            raise InvalidState(
                "the plan deletes or replaces: confirm with --yes (no terminal to ask)",
                code="confirmation_required",
            )
        return click.confirm("Apply, deleting and replacing as shown?", err=as_json)

    def progress(change: Any, status: str, message: str) -> None:
        sign = SIGNS[change.action][0]
        what = f"{sign} {change.kind} {change.name} on {change.host}"
        if status == "start":
            click.echo(f"  {what}: {change.action}...", file=out)
        elif status == "done":
            click.echo(f"  {what}: {message}", file=out)
        else:
            click.echo(click.style(f"  {what}: FAILED: {message}", fg="red"), file=out)

    planned, result = sites.apply(
        site,
        prune=prune,
        allow_replace=allow_replace,
        parallel=parallel,
        progress=progress,
        confirm=confirm,
    )
    if as_json:
        render.print_json(
            {"plan": planned.model_dump(mode="json"), "result": result.model_dump(mode="json")}
        )
    elif planned.empty:
        _print_plan(planned, path)
    if result.rolled_back:
        click.echo("Rolled back: " + "; ".join(result.rolled_back), file=out)
    if not result.ok:
        click.echo(click.style(f"apply failed after {result.seconds:.1f} s", fg="red"), err=True)
        sys.exit(1)
    if not as_json and not planned.empty:
        click.echo(f"Applied {len(result.steps)} change(s) in {result.seconds:.1f} s.")


@click.command()
@file_option
@json_option
@pass_state
def drift(state: State, path: str, as_json: bool) -> None:
    """Report what differs on the hosts from the site file (exit 2 when something does)."""
    sites = state.client.sites
    found = sites.drift(sites.load(path))
    if as_json:
        render.print_json(found)
    elif not found:
        click.echo(f"No drift: the hosts match {path}.")
    else:
        render.table(
            ["KIND", "NAME", "HOST", "FIELD", "FILE", "HOST HAS"],
            [[d.kind, d.name, d.host, d.field, d.want, d.have] for d in found],
        )
    if found:
        sys.exit(2)


@click.group()
def site() -> None:
    """The site file of plan, apply and drift."""


@site.command("schema")
def schema() -> None:
    """Print the site file's JSON schema."""
    from virtkit.specs.site import Site

    click.echo(json.dumps(Site.model_json_schema(), indent=2))


@site.command("check")
@file_option
@pass_state
def check(state: State, path: str) -> None:
    """Check a site file (types, names, hosts, dependencies) without asking any host."""
    loaded = state.client.sites.load(path)
    vms = sum(v.replicas for v in loaded.vms)
    click.echo(
        f"{path}: site {loaded.site}: {len(loaded.pools)} pools, {len(loaded.networks)} "
        f"networks, {len(loaded.templates)} templates, {vms} VMs: fine"
    )
