"""``virtkit events``: follow the domain events of one or more hosts as they happen."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from virtkit.cli.state import State, pass_state

# DomainEvent kinds (virtkit.backend.events.KINDS; a unit test keeps them equal); ``connection``
# lines are always shown, so it is no choice here.
KINDS = ("lifecycle", "metadata", "job", "block-job", "migration", "io-error")


@click.command()
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="URI",
    help="Also follow this libvirt host (repeatable); the first is the global -c/--connect.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Only events of this kind (repeatable).",
)
@click.option(
    "--vm", "only", multiple=True, help="Only events of this VM, name or UUID (repeatable)."
)
@click.option("--timeout", type=float, help="Stop after this many seconds.")
@pass_state
def events(
    state: State,
    hosts: tuple[str, ...],
    as_json: bool,
    kinds: tuple[str, ...],
    only: tuple[str, ...],
    timeout: float | None,
) -> None:
    """Print VM events (lifecycle, jobs, block jobs, I/O errors, ...) of every host, until Ctrl+C.

    Follows the host of -c/--connect and every --host URI, one connection each; every line
    names its host. A host that drops is reported and followed again once it answers. A host
    unreachable at the start is an error if it is the only one; with others it is reported
    and tried again every few seconds.
    """
    import time

    from virtkit.client import follow_events

    clients = [state.client, *(state.client_for(uri) for uri in hosts)]
    feed = follow_events(clients, kinds=kinds, vms=only)
    feed.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            left = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            arrived = feed.get(timeout=left)
            if arrived is not None:
                names = feed.hostnames
                record = {"time": iso_time(arrived.at), **arrived.event.as_dict()}
                record["hostname"] = names.get(record["host"])
                click.echo(json.dumps(record) if as_json else text_line(record, names))
    except KeyboardInterrupt:
        pass
    finally:
        feed.close()


def iso_time(at: float) -> str:
    """ISO 8601 in UTC, to the millisecond: ``2026-01-02T03:04:05.678Z``."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def host_label(uri: str, hostnames: dict[str, str | None]) -> str:
    """The host's name if no other followed host has the same one, else its URI."""
    name = hostnames.get(uri)
    if name and list(hostnames.values()).count(name) == 1:
        return name
    return uri


_CONNECTION_TEXT = {
    "lost": "connection lost ({detail}); reconnecting",
    "reconnected": "reconnected; events while it was away are missed",
    "unreachable": "unreachable ({detail}); trying again",
    "connected": "connected",
}


def text_line(record: dict[str, Any], hostnames: dict[str, str | None]) -> str:
    label = host_label(record["host"], hostnames)
    kind, event, detail = record["kind"], record["event"], record["detail"]
    if kind == "connection":
        what = _CONNECTION_TEXT.get(event, event).format(detail=detail)
        return f"{record['time']}  {label}  -- {what}"
    what = f"{event} ({detail})" if detail else event
    if kind != "lifecycle":
        what = f"{kind} {what}"
    summary = _summary(kind, record["data"])
    return f"{record['time']}  {label}  {record['vm'] or '-':24} {what}{summary}"


def _summary(kind: str, data: dict[str, Any]) -> str:
    """The few facts of an event's data worth a text line."""
    from virtkit.specs import format_size

    parts: list[str] = []
    if kind == "job":
        if "time_elapsed" in data:
            parts.append(f"{data['time_elapsed']} ms")
        for what in ("data", "disk", "memory"):
            done, total = data.get(f"{what}_processed"), data.get(f"{what}_total")
            if isinstance(done, int) and isinstance(total, int):
                parts.append(f"{format_size(done)} of {format_size(total)}")
                break
        if data.get("success") is False:
            parts.append("failed")
    elif kind == "block-job":
        parts.append(f"disk {data.get('disk')}")
    elif kind == "io-error":
        parts.append(f"disk {data.get('device') or data.get('path')}")
        if data.get("reason"):
            parts.append(str(data["reason"]))
    elif kind == "migration":
        parts.append(f"iteration {data.get('iteration')}")
    return ("  " + ", ".join(parts)) if parts else ""
