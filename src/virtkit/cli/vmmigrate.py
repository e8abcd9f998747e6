"""``virtkit vm migrate NAME --to HOST``: move a VM to another registered host (docs/hosts.md)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state


def _rate(value: int | None) -> str:
    return "-" if value is None else f"{render.size(value)}/s"


def print_plan(plan: Any) -> None:
    kind = "live" if plan.live else "offline"
    click.echo(f"{plan.vm}: {plan.source} -> {plan.target}, {kind}, {plan.mode}")
    for c in plan.checks:
        click.echo(f"  {'ok ' if c.ok else 'NO '} {c.name}: {c.detail}")
    for d in plan.disks:
        where = d.dest if d.dest == d.source else f"{d.source} -> {d.dest}"
        click.echo(f"  disk {d.target}: {d.action} ({where})")
    if plan.live and plan.dirty_rate is not None:
        course = (
            f"converges in about {plan.predicted_seconds:g} s, downtime about "
            f"{plan.predicted_downtime_ms:g} ms"
            if plan.converges
            else "does not converge by plain pre-copy"
        )
        click.echo(f"  dirty rate {_rate(plan.dirty_rate)} over a link of {_rate(plan.link)}: "
                   f"{course}")  # fmt: skip


class _Progress:
    """One line on stderr: on a terminal rewritten in place, else a line every 2 s."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int | None, detail: dict[str, Any]) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 2:
            return
        self.last = now
        if phase == "migrating":
            text = (
                f"migrating: {render.size(done)}"
                + (f" of {render.size(total)}" if total else "")
                + f", {render.size(int(str(detail.get('remaining', 0))))} left, pass "
                f"{detail.get('iteration')}, dirty {_rate(int(str(detail.get('dirty_rate', 0))))}"
                + (", post-copy" if detail.get("postcopy") else "")
            )
        else:
            text = f"{phase}: {render.size(done)}" + (f" of {render.size(total)}" if total else "")
        if self.tty:
            click.echo("\r" + text.ljust(100)[:120], nl=False, err=True)
        else:
            click.echo(text, err=True)

    def done(self) -> None:
        if self.tty and self.last:
            click.echo("", err=True)


@click.command()
@click.argument("name")
@click.option("--to", "target", required=True, help="The registered host to move it to.")
@click.option("--offline", is_flag=True, help="Move a shut-off VM's definition (and storage).")
@click.option(
    "--copy-storage", is_flag=True, help="Copy disks the target does not share, into its pool "
    "of the same name."
)  # fmt: skip
@click.option(
    "--auto", is_flag=True, help="Choose pre-copy, auto-converge or post-copy from the dirty "
    "rate measured first."
)  # fmt: skip
@click.option("--max-downtime", type=click.IntRange(1), help="Milliseconds the guest may pause.")
@click.option("--bandwidth", type=click.IntRange(1), help="MiB/s the migration may use.")
@click.option("--link-speed", type=click.FloatRange(1), help="MiB/s of the link (prediction).")
@click.option("--timeout", type=click.FloatRange(1), help="Give up after this many seconds.")
@click.option("--keep-source", is_flag=True, help="Keep the definition on the source host.")
@click.option("--transient", is_flag=True, help="Do not define the VM on the target.")
@click.option(
    "--unsafe", is_flag=True, help="Migrate though libvirt cannot tell the storage is shared."
)
@click.option("--dry-run", is_flag=True, help="Run every check and the prediction; move nothing.")
@json_option
@pass_state
def migrate(state: State, name: str, target: str, offline: bool, copy_storage: bool, auto: bool,
            max_downtime: int | None, bandwidth: int | None, link_speed: float | None,
            timeout: float | None, keep_source: bool, transient: bool, unsafe: bool,
            dry_run: bool, as_json: bool) -> None:  # fmt: skip
    """Move a VM to another registered host: live (a running VM) or offline.

    \b
    Every check runs first (CPU, storage, memory, networks, machine type, devices) and every
    failure is said before anything moves. Ctrl+C cancels: the VM stays on its host, and
    the target keeps nothing.
    \b
      virtkit vm migrate web1 --to kvm2
      virtkit vm migrate web1@kvm1 --to kvm3 --copy-storage --auto --max-downtime 200
    """
    from virtkit.specs import MigrateOptions

    fleet = state.client.fleet
    source = state.host or fleet.find_vm(name)
    opts = MigrateOptions(
        offline=offline, copy_storage=copy_storage, auto=auto, max_downtime_ms=max_downtime,
        bandwidth_mib=bandwidth, link_mib=link_speed, persist=not transient,
        undefine_source=not keep_source, unsafe=unsafe, timeout=timeout,
    )  # fmt: skip
    with fleet.migration(source, target) as service:
        if dry_run:
            plan = service.plan(name, opts)
            if as_json:
                render.print_json(plan)
            else:
                print_plan(plan)
            if not plan.ok:
                sys.exit(1)
            return
        progress = _Progress()
        try:
            result = service.migrate(name, opts, progress=progress)
        finally:
            progress.done()
    if as_json:
        render.print_json(result)
        return
    extra = f", downtime {result.downtime_ms} ms" if result.downtime_ms is not None else ""
    post = ", switched to post-copy" if result.switched_to_postcopy else ""
    kind = "live" if result.live else "offline"
    click.echo(
        f"migrated {name}: {source} -> {target} ({kind}, {result.mode}{post}) in "
        f"{result.seconds:.2f} s{extra}; {result.state}"
    )
