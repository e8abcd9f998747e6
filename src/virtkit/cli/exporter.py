"""``virtkit exporter``: Prometheus metrics of one or more libvirt hosts on ADDRESS:PORT."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from virtkit.cli.state import State, pass_state

log = logging.getLogger("virtkit.exporter")


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not ADDRESS:PORT (e.g. 127.0.0.1:9178)")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command()
@click.option(
    "--listen", help="ADDRESS:PORT to serve on (default 127.0.0.1:9178; exporter_listen)."
)
@click.option(
    "--uri",
    "uris",
    multiple=True,
    help="A libvirt host to export (repeatable; default: virtkit's URI). Series carry `host`.",
)
@pass_state
def exporter(state: State, listen: str | None, uris: tuple[str, ...]) -> None:
    """Serve Prometheus metrics of hosts and VMs (all VMs, KSM, the host) until Ctrl+C.

    Every scrape reads each host afresh: one bulk statistics call for all its domains, the
    host's facts, and virtkit's tasks. Metric names follow prometheus-libvirt-exporter's where
    it has them (libvirt_domain_*), the rest are virtkit_*; see docs/monitoring.md.
    """
    try:
        from virtkit.metrics.http import exporter_server
    except ImportError as exc:
        raise click.ClickException(
            f"the exporter needs prometheus-client ({exc.name} is missing)"
        ) from None
    from virtkit.client import Client

    base = state.client
    clients = [
        base if uri == base.uri else Client(settings=base.settings.model_copy(update={"uri": uri}))
        for uri in dict.fromkeys(uris or [base.uri])
    ]
    address = _address(listen or base.settings.exporter_listen)
    try:
        server = exporter_server([c.metrics for c in clients], base.store, address)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {address[0]}:{address[1]}: {exc}") from None
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    click.echo(
        f"virtkit exporter on http://{shown}:{server.server_address[1]}/metrics "
        f"({', '.join(c.uri for c in clients)})"
    )
    sys.stdout.flush()
    for c in clients:  # a host's KVM verdict may take a boot probe: start it before a scrape
        c.metrics.decide_kvm()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for c in clients:
            if c is not base:
                c.close()
