"""``virtkit``: the command line. Thin: parse, call a service, render.

Start-up matters (``virtkit --help`` in well under 120 ms): the command groups are imported
only when one is run or asked for its help, and ``--help`` lists them from ``COMMANDS`` below.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# No third-party pydantic plugins in a CLI process: scanning for them costs start-up time.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import click

from virtkit._version import __version__
from virtkit.cli.state import State
from virtkit.errors import VirtkitError

# name -> (module, attribute, short help). tests/unit/test_cli.py checks that the short help
# is the first paragraph of each command's own help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "apply": (
        "virtkit.cli.site", "apply",
        "Make the site's hosts match the site file: pools and networks, then templates, then "
        "VMs; rolls back what it created when a step fails; a second apply does nothing.",
    ),
    "audit": (
        "virtkit.cli.audit", "audit",
        "Show the audit log: who changed what, when, and the result; newest first.",
    ),
    "backup": (
        "virtkit.cli.backup", "backup",
        "Back up VMs (full and incremental), verify, restore, prune, schedule.",
    ),
    "dev": ("virtkit.cli.dev", "dev", "Development helpers (the tiny test guest)."),
    "diag": (
        "virtkit.cli.diag", "diag",
        "Diagnostics: a bundle of facts, reports, XML and logs, secrets redacted.",
    ),
    "doctor": (
        "virtkit.cli.doctor", "doctor",
        "Check the host (or a VM: doctor vm NAME): findings, why they matter, and the fix.",
    ),
    "drift": (
        "virtkit.cli.site", "drift",
        "Report what differs on the hosts from the site file (exit 2 when something does).",
    ),
    "events": (
        "virtkit.cli.events", "events",
        "Print VM events (lifecycle, jobs, block jobs, I/O errors, ...) of every host, until "
        "Ctrl+C.",
    ),
    "exporter": (
        "virtkit.cli.exporter", "exporter",
        "Serve Prometheus metrics of hosts and VMs (all VMs, KSM, the host) until Ctrl+C.",
    ),
    "host": (
        "virtkit.cli.host", "host",
        "This host's facts; the hosts virtkit manages (add, list, show, remove, maintenance).",
    ),
    "image": ("virtkit.cli.image", "image", "Disk images and templates."),
    "inventory": (
        "virtkit.cli.inventory", "inventory",
        "Ansible dynamic inventory of the VMs: groups from tags, host, state, template, OS.",
    ),
    "ksm": (
        "virtkit.cli.ksm", "ksm", "KSM: memory saved, per host and per VM; enable, disable, tune."
    ),
    "net": (
        "virtkit.cli.network", "net",
        "Virtual networks: NAT, routed, isolated, open, bridged, macvtap.",
    ),
    "plan": (
        "virtkit.cli.site", "plan",
        "Show what apply would change on the site's hosts to match the site file.",
    ),
    "pool": ("virtkit.cli.storage", "pool", "Storage pools: where volumes live."),
    "serve": (
        "virtkit.cli.serve", "serve",
        "Run the REST API and the web UI (https with --cert/--key), until Ctrl+C or SIGTERM.",
    ),
    "site": ("virtkit.cli.site", "site", "The site file of plan, apply and drift."),
    "tune": (
        "virtkit.cli.tune", "tune",
        "Tune a VM (pinning, NUMA, hugepages, I/O) or the host for a profile, with reasons.",
    ),
    "user": (
        "virtkit.cli.user", "user", "Users of the API and web UI: roles, passwords, API tokens."
    ),
    "vm": ("virtkit.cli.vm", "vm", "Create, run, change and delete VMs."),
    "volume": ("virtkit.cli.storage", "volume", "Volumes (disk images) in storage pools."),
}  # fmt: skip


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, listed from a static table."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str, str]], **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attr, _help = self.lazy[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's listing, with each lazy group's short help from the table (no import)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or click.Command(name, help=self.lazy[name][2])
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="virtkit")
@click.option(
    "-c",
    "--connect",
    "uri",
    envvar="VIRTKIT_URI",
    help="libvirt URI (default qemu:///system, or $VIRTKIT_URI).",
)
@click.option(
    "-H",
    "--host",
    "host_name",
    envvar="VIRTKIT_HOST",
    help="A registered host by name (virtkit host add), instead of --connect.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what virtkit does.")
@click.option("--debug", is_flag=True, help="Debug logs and tracebacks.")
@click.option(
    "--log-json", is_flag=True, help="Logs as ECS JSON lines (the setting log_format=ecs)."
)
@click.pass_context
def cli(
    ctx: click.Context,
    uri: str | None,
    host_name: str | None,
    verbose: bool,
    debug: bool,
    log_json: bool,
) -> None:
    """virtkit: manage KVM virtual machines through libvirt."""
    from virtkit.cli.logs import early_format, setup_logging

    setup_logging(verbose, debug, early_format(log_json))
    chosen = ctx.get_parameter_source("uri") is click.core.ParameterSource.COMMANDLINE
    ctx.obj = State(uri, log_json=log_json, uri_chosen=chosen)
    if host_name:
        ctx.obj.select_host(host_name)
    ctx.call_on_close(ctx.obj.close)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        cli.main(args=argv, prog_name="virtkit", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", code="aborted", prefix="")
        sys.exit(130)
    except click.ClickException as exc:
        from virtkit.cli.logs import ecs_active

        if ecs_active():
            _fail(exc.format_message(), exc, code="usage_error")
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except VirtkitError as exc:
        # One line, always: QEMU's start errors quote its multi-line log.
        _fail(" ".join(str(exc).split()), exc, code=exc.code, traceback=debug)
        sys.exit(1)
    except KeyboardInterrupt:
        _fail("interrupted", code="interrupted", prefix="")
        sys.exit(130)
    except Exception as exc:
        _fail(
            f"{type(exc).__name__}: {exc} (run with --debug for the traceback; please report it)",
            exc,
            code="internal_error",
            prefix="internal error: ",
            traceback=debug,
        )
        sys.exit(3)


def _fail(line: str, exc: BaseException | None = None, **how: Any) -> None:
    """The last words on stderr: a line, or an ECS record when logs are ECS (cli/logs.py)."""
    from virtkit.cli.logs import fail

    fail(line, exc, **how)
