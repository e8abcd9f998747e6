"""``virtkit``: the command line. Thin: parse, call a service, render."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from typing import Any

# No third-party pydantic plugins in a CLI process: scanning for them costs start-up time.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import click

from virtkit._version import __version__
from virtkit.cli.state import State
from virtkit.errors import VirtkitError

log = logging.getLogger("virtkit.cli")


class _JSONFormatter(logging.Formatter):
    """One JSON object a line, with ECS field names, ready for the ELK stack."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            + f".{int(record.msecs):03d}Z",
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "process.pid": record.process,
            "service.name": "virtkit",
        }
        doc.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: int, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JSONFormatter())
        logging.Formatter.converter = time.gmtime
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="virtkit")
@click.option(
    "-c",
    "--connect",
    "uri",
    envvar="VIRTKIT_URI",
    help="libvirt URI (default qemu:///system, or $VIRTKIT_URI).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what virtkit does.")
@click.option("--debug", is_flag=True, help="Debug logs and tracebacks.")
@click.option("--log-json", is_flag=True, help="Logs as JSON lines (ECS fields).")
@click.pass_context
def cli(ctx: click.Context, uri: str | None, verbose: bool, debug: bool, log_json: bool) -> None:
    """virtkit: manage KVM virtual machines through libvirt."""
    setup_logging(
        logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING, log_json
    )
    ctx.obj = State(uri)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from virtkit.cli import dev, events, host, image, ksm, network, storage, vm

    cli.add_command(vm.vm)
    cli.add_command(ksm.ksm)
    cli.add_command(network.net)
    cli.add_command(image.image)
    cli.add_command(storage.pool)
    cli.add_command(storage.volume)
    cli.add_command(events.events)
    cli.add_command(host.host)
    cli.add_command(dev.dev)


_register()


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        cli.main(args=argv, prog_name="virtkit", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VirtkitError as exc:
        if debug:
            traceback.print_exc()
        # One line, always: QEMU's start errors quote its multi-line log.
        sys.stderr.write("error: " + " ".join(str(exc).split()) + "\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(
            f"internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback; please report it)\n"
        )
        sys.exit(3)
