"""What every command shares: the per-invocation ``State``, ``pass_state`` and common options.

Command modules import this, never ``cli/main.py`` (which imports them, lazily): no cycle.
"""

from __future__ import annotations

from typing import Any

import click


class State:
    """What every command gets: settings overrides and a lazily made client."""

    def __init__(self, uri: str | None, *, log_json: bool = False) -> None:
        self.uri = uri
        self.log_json = log_json
        self._client: Any = None
        self._others: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from virtkit.cli.logs import apply_settings
            from virtkit.client import Client  # lazy: `virtkit --help` stays fast
            from virtkit.settings import Settings

            settings = Settings.load(uri=self.uri)
            # The settings are read only now: their log_format (from the TOML file too)
            # applies from here on, unless --log-json chose.
            apply_settings(settings.log_format, forced=self.log_json)
            self._client = Client(settings=settings)
        return self._client

    def client_for(self, uri: str) -> Any:
        """A client of another host (``events --host``): the same settings, another URI."""
        if uri not in self._others:
            from virtkit.client import Client

            settings = self.client.settings.model_copy(update={"uri": uri})
            self._others[uri] = Client(settings=settings)
        return self._others[uri]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for other in self._others.values():
            other.close()


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Output JSON.")
