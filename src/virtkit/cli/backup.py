"""``virtkit backup ...``: backup sets of VMs (full and incremental, through libvirt's backup
API), their verification and restore, retention and schedules."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from virtkit.cli import render
from virtkit.cli.progress import PhasedProgress, confirm
from virtkit.cli.state import State, json_option, pass_state
from virtkit.errors import InvalidInput

if TYPE_CHECKING:
    from virtkit.specs.backup import BackupSet, Retention

to_option = click.option(
    "--to", "directory", type=click.Path(file_okay=False), default=None,
    help="The backup directory (default: the setting backup_dir).",
)  # fmt: skip
yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _parse_time(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--at takes an ISO time (2026-12-04T20:00Z), got {text!r}",
                           code="invalid_time") from None  # fmt: skip
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@click.group()
def backup() -> None:
    """Back up VMs (full and incremental), verify, restore, prune, schedule."""


@backup.command()
@click.argument("vm")
@click.option("--full", is_flag=True, help="A full backup even where an incremental could be.")
@to_option
@json_option
@pass_state
def create(state: State, /, vm: str, full: bool, directory: str | None, as_json: bool) -> None:
    """Back up a VM: running, through libvirt's backup job (incremental since the last set where
    it can be, else full, saying why); shut off, by a copy of each disk. Ctrl+C cancels and
    removes what was made."""
    bar = PhasedProgress()
    try:
        result = state.client.backups.create(vm, directory=directory, full=full, progress=bar)
    except KeyboardInterrupt:
        bar.close()
        click.echo("backup cancelled: no set, file or checkpoint of it remains", err=True)
        raise SystemExit(130) from None
    finally:
        bar.close()
    if as_json:
        render.print_json(result)
        return
    made = result.set
    click.echo(f"{made.kind} backup {made.id} of {vm}: {render.size(made.size)} in {made.path}")
    for note in result.notes:
        click.echo(f"note: {note}")


@backup.command("list")
@click.argument("vm", required=False)
@to_option
@json_option
@pass_state
def list_(state: State, /, vm: str | None, directory: str | None, as_json: bool) -> None:
    """List a VM's backup sets, oldest first (without VM: every VM with sets)."""
    svc = state.client.backups
    vms = [vm] if vm else svc.vms(directory=directory)
    sets: list[BackupSet] = [s for name in vms for s in svc.list(name, directory=directory)]
    if as_json:
        render.print_json(sets)
        return
    rows = [
        [s.vm, s.id, s.kind, s.parent or "-", _when(s.started), render.size(s.size),
         s.checkpoint or "-"]
        for s in sets
    ]  # fmt: skip
    render.table(["VM", "SET", "KIND", "PARENT", "MADE", "SIZE", "CHECKPOINT"], rows)


@backup.command()
@click.argument("vm")
@click.argument("set_id", metavar="SET", required=False)
@to_option
@json_option
@pass_state
def verify(state: State, /, vm: str, set_id: str | None, directory: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Check a set (default: the newest) without restoring it: each disk's checksum, qemu-img
    check, and that the sets it builds on are there. Exit status 1 if anything is wrong."""
    svc = state.client.backups
    result = svc.verify(svc.get(vm, set_id, directory=directory), directory=directory)
    if as_json:
        render.print_json(result)
    else:
        for d in result.disks:
            status = "ok" if d.checksum_ok and d.image_ok else f"BAD: {d.message}"
            click.echo(f"{result.set} {d.target}: {status}")
        click.echo(f"chain: {' -> '.join(result.chain)}")
        click.echo("verified: ok" if result.ok else "verified: FAILED")
    if not result.ok:
        raise SystemExit(1)


@backup.command()
@click.argument("vm")
@click.argument("set_id", metavar="SET", required=False)
@click.option("--at", "at", default=None, help="The newest set made at or before this time.")
@click.option("--new-name", default=None, help="Restore into a new VM of this name.")
@click.option("--force", is_flag=True, help="Power the VM off if it runs (into the VM itself).")
@yes_option
@to_option
@json_option
@pass_state
def restore(state: State, /, vm: str, set_id: str | None, at: str | None, new_name: str | None,
            force: bool, yes: bool, directory: str | None, as_json: bool) -> None:  # fmt: skip
    """Restore a set (default: the newest) with the sets it builds on: into the VM itself
    (overwriting its disks; it must be shut off, or --force powers it off), or with --new-name
    into a new VM with a new UUID, new MACs and new disks in the VM pool."""
    svc = state.client.backups
    chosen = svc.get(vm, set_id, at=_parse_time(at) if at else None, directory=directory)
    if new_name is None:
        vm_state, files = svc.restore_plan(chosen)
        click.echo(f"restoring {chosen.id} of {vm} OVERWRITES:", err=True)
        for target, path in files.items():
            click.echo(f"  {target}: {path}", err=True)
        if vm_state.value != "shutoff":
            click.echo(f"  and the VM is {vm_state.value}"
                       + (": --force powers it off" if force else ""), err=True)  # fmt: skip
        confirm("Overwrite these disks?", yes)
    bar = PhasedProgress()
    try:
        result = svc.restore(chosen, new_name=new_name, force=force, directory=directory,
                             progress=bar)  # fmt: skip
    finally:
        bar.close()
    if as_json:
        render.print_json(result)
        return
    click.echo(f"restored {' -> '.join(result.chain)} into {result.vm}"
               + (" (a new VM)" if result.new_vm else ""))  # fmt: skip
    for note in result.notes:
        click.echo(f"note: {note}")


def _retention(keep_last: int, keep_daily: int, keep_weekly: int) -> Retention:
    from virtkit.specs.backup import Retention
    from virtkit.specs.common import parse_model

    return parse_model(Retention, {"keep_last": keep_last, "keep_daily": keep_daily,
                                   "keep_weekly": keep_weekly}, "retention")  # fmt: skip


def retention_options(f: Any) -> Any:
    f = click.option("--keep-weekly", default=0, show_default=True,
                     help="Keep the newest set of each of the last W weeks.")(f)  # fmt: skip
    f = click.option("--keep-daily", default=0, show_default=True,
                     help="Keep the newest set of each of the last D days.")(f)  # fmt: skip
    return click.option("--keep-last", default=3, show_default=True,
                        help="Keep the newest N sets.")(f)  # fmt: skip


@backup.command()
@click.argument("vm")
@retention_options
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@yes_option
@to_option
@json_option
@pass_state
def prune(state: State, /, vm: str, keep_last: int, keep_daily: int, keep_weekly: int,
          dry_run: bool, yes: bool, directory: str | None, as_json: bool) -> None:  # fmt: skip
    """Remove the sets a retention policy does not keep, and their checkpoints. A set that a
    kept incremental builds on is always kept."""
    svc = state.client.backups
    policy = _retention(keep_last, keep_daily, keep_weekly)
    plan = svc.prune(vm, policy, directory=directory, dry_run=True)
    if not dry_run and plan.removed:
        click.echo(f"prune DELETES {len(plan.removed)} set(s) of {vm}: "
                   f"{', '.join(plan.removed)}", err=True)  # fmt: skip
        confirm("Delete them?", yes)
    result = plan if dry_run else svc.prune(vm, policy, directory=directory)
    if as_json:
        render.print_json(result)
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(result.removed)} set(s): {', '.join(result.removed) or '-'}")
    click.echo(f"kept {len(result.kept)}: {', '.join(result.kept) or '-'}")
    if result.checkpoints_removed:
        click.echo(f"checkpoints {verb}: {', '.join(result.checkpoints_removed)}")


@backup.command("run-due")
@json_option
@pass_state
def run_due(state: State, /, as_json: bool) -> None:
    """Run every due backup schedule, then prune by its retention (what the timer runs each
    minute). Exit status 1 if a backup failed."""
    result = state.client.backups.run_due()
    if as_json:
        render.print_json(result)
    else:
        for line in result.ran:
            click.echo(line)
        for p in result.pruned:
            if p.removed:
                click.echo(f"pruned {p.vm}: {', '.join(p.removed)}")
        if not result.ran:
            click.echo("no schedule is due")
    if result.failed:
        raise SystemExit(1)


# -- schedules ---------------------------------------------------------------------------------


@backup.group()
def schedule() -> None:
    """Backup schedules: per VM or per tag, cron times, retention."""


@schedule.command("add")
@click.option("--vm", default=None, help="Back up this VM ...")
@click.option("--tag", default=None, help="... or every VM with this tag.")
@click.option("--cron", "cron", required=True, help="5 cron fields, UTC: '30 2 * * *'.")
@retention_options
@to_option
@json_option
@pass_state
def schedule_add(state: State, /, vm: str | None, tag: str | None, cron: str, keep_last: int,
                 keep_daily: int, keep_weekly: int, directory: str | None,
                 as_json: bool) -> None:  # fmt: skip
    """Add a schedule; `backup run-due` (the timer: `schedule install-timer`) runs it."""
    from virtkit.specs.backup import ScheduleSpec
    from virtkit.specs.common import parse_model

    spec = parse_model(ScheduleSpec, {
        "vm": vm, "tag": tag, "cron": cron, "dir": directory,
        "retention": _retention(keep_last, keep_daily, keep_weekly).model_dump(),
    }, "schedule")  # fmt: skip
    view = state.client.backups.add_schedule(spec)
    if as_json:
        render.print_json(view)
    else:
        click.echo(f"schedule {view.id}: {view.vm or 'tag ' + str(view.tag)} at '{view.cron}'")


@schedule.command("list")
@json_option
@pass_state
def schedule_list(state: State, /, as_json: bool) -> None:
    """List the schedules."""
    views = state.client.backups.list_schedules()
    if as_json:
        render.print_json(views)
        return
    rows = [
        [str(v.id), v.vm or f"tag:{v.tag}", v.cron,
         f"last {v.retention.keep_last}, daily {v.retention.keep_daily}, "
         f"weekly {v.retention.keep_weekly}",
         _when(v.last_run) if v.last_run else "never", v.last_result or "-"]
        for v in views
    ]  # fmt: skip
    render.table(["ID", "WHAT", "CRON", "KEEP", "LAST RUN", "RESULT"], rows)


@schedule.command("remove")
@click.argument("schedule_id", type=int)
@pass_state
def schedule_remove(state: State, /, schedule_id: int) -> None:
    """Remove a schedule (its backup sets stay)."""
    view = state.client.backups.remove_schedule(schedule_id)
    click.echo(f"removed schedule {view.id}")


@schedule.command("install-timer")
@click.option("--cron", "kind", flag_value="cron", default=True, help="/etc/cron.d/virtkit-backup.")
@click.option("--systemd", "kind", flag_value="systemd", help="A systemd timer and service.")
@click.option("--target-dir", type=click.Path(file_okay=False), default=None,
              help="Write here (default: /etc/cron.d or /etc/systemd/system).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the files; write nothing.")
@pass_state
def install_timer(state: State, /, kind: str, target_dir: str | None, dry_run: bool) -> None:
    """Write what runs `virtkit backup run-due` each minute: a cron.d file or a systemd timer."""
    svc = state.client.backups
    virtkit = str(Path(sys.argv[0]).resolve()) if sys.argv[0] else "virtkit"
    env = {"VIRTKIT_URI": state.client.settings.uri}
    if dry_run:
        for name, content in svc.timer_files(kind, virtkit, env).items():
            click.echo(f"# {name}\n{content}")
        return
    default = "/etc/cron.d" if kind == "cron" else "/etc/systemd/system"
    for path in svc.install_timer(kind, Path(target_dir or default), virtkit, env):
        click.echo(f"wrote {path}")
    if kind == "systemd":
        click.echo("now: systemctl daemon-reload && systemctl enable --now virtkit-backup.timer")
