"""What every command shares: the per-invocation ``State``, ``pass_state`` and common options.

Command modules import this, never ``cli/main.py`` (which imports them, lazily): no cycle.
"""

from __future__ import annotations

from typing import Any

import click


class State:
    """What every command gets: settings overrides and a lazily made client."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from virtkit.client import Client  # lazy: `virtkit --help` stays fast
            from virtkit.settings import Settings

            self._client = Client(settings=Settings.load(uri=self.uri))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Output JSON.")
