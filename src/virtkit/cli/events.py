"""``virtkit events``: follow VM lifecycle events as they happen."""

from __future__ import annotations

import json
import queue
import time

import click

from virtkit.cli.state import State, pass_state


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--vm", "only", multiple=True, help="Only events of this VM (repeatable).")
@click.option("--timeout", type=float, help="Stop after this many seconds.")
@pass_state
def events(state: State, as_json: bool, only: tuple[str, ...], timeout: float | None) -> None:
    """Print VM lifecycle events (defined, started, suspended, stopped, ...) until Ctrl+C."""
    from virtkit.client import DomainEvent

    arrived: queue.Queue[DomainEvent] = queue.Queue()
    unsubscribe = state.client.subscribe(arrived.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                event = arrived.get(timeout=0.2)
            except queue.Empty:
                continue
            if only and event.domain not in only:
                continue
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            if as_json:
                line = json.dumps(
                    {
                        "time": stamp,
                        "vm": event.domain,
                        "uuid": event.uuid,
                        "event": event.event,
                        "detail": event.detail,
                    }
                )
            else:
                line = f"{stamp}  {event.domain:24} {event.event}"
            click.echo(line)
    except KeyboardInterrupt:
        pass
    finally:
        unsubscribe()
