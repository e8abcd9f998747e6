"""What every command shares: the per-invocation ``State``, ``pass_state`` and common options.

Command modules import this, never ``cli/main.py`` (which imports them, lazily): no cycle.
"""

from __future__ import annotations

from typing import Any

import click


class State:
    """What every command gets: settings overrides and a lazily made client."""

    def __init__(
        self,
        uri: str | None,
        *,
        log_json: bool = False,
        host: str | None = None,
        uri_chosen: bool = False,
    ) -> None:
        self.uri = uri
        # ``--connect`` on the command line (not $VIRTKIT_URI): one host chosen by URI
        self.uri_chosen = uri_chosen
        self.host: str | None = None  # a registered host chosen by name (--host, NAME@HOST)
        self.log_json = log_json
        self._client: Any = None
        self._others: dict[str, Any] = {}
        if host:
            self.select_host(host)

    @property
    def one_host(self) -> bool:
        """Whether the command line chose one host (``--connect`` or ``--host``)."""
        return self.uri_chosen or self.host is not None

    def select_host(self, name: str) -> None:
        """Run against the registered host ``name`` (``--host``, ``NAME@HOST``)."""
        if self.host is not None and self.host != name:
            raise click.UsageError(f"two hosts given: {self.host!r} and {name!r}")
        if self.uri_chosen:
            raise click.UsageError("--connect and --host both choose the host: give one")
        if self._client is not None:
            raise click.UsageError("--host comes before anything that needs the host")
        self.host = name

    def settings(self) -> Any:
        from virtkit.settings import Settings

        settings = Settings.load(uri=self.uri)
        if self.host is not None:
            from virtkit.client import Client

            with Client(settings=settings) as registry:  # connects to nothing: the store only
                uri = registry.fleet.uri_of(self.host)
            settings = settings.model_copy(update={"uri": uri})
        return settings

    @property
    def client(self) -> Any:
        if self._client is None:
            from virtkit.cli.logs import apply_settings
            from virtkit.client import Client  # lazy: `virtkit --help` stays fast

            settings = self.settings()
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


def _choose_host(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(State).select_host(value)


def _with_host_option(command: click.Command) -> None:
    """``--host NAME`` on a command and, for a group, on each of its commands."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_host_option(sub)
        return
    if not any(p.name == "host" for p in command.params):
        command.params.append(
            click.Option(
                ["--host"],
                metavar="HOST",
                expose_value=False,
                is_eager=True,
                callback=_choose_host,
                help="The registered host the VM is on (also NAME@HOST).",
            )
        )


class HostAwareGroup(click.Group):
    """The ``vm`` commands: each takes ``--host HOST``, and a VM named ``NAME@HOST`` means
    the VM NAME on the registered host HOST."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _with_host_option(cmd)
        super().add_command(cmd, name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None and not isinstance(cmd, click.Group):
            rest = _split_at_host(ctx, cmd, rest)
        return name, cmd, rest


def _split_at_host(ctx: click.Context, cmd: click.Command, args: list[str]) -> list[str]:
    """``NAME@HOST`` as the command's first argument (the VM): NAME, and HOST chosen."""
    first = next((p for p in cmd.params if isinstance(p, click.Argument)), None)
    if first is None or first.name not in ("name", "vm", "names"):
        return args
    parser = cmd.make_parser(ctx)
    try:
        opts, _rest, _order = parser.parse_args(list(args))
    except click.UsageError:
        return args  # the command's own parsing says what is wrong
    value = opts.get(first.name or "")
    given = value[0] if isinstance(value, (list, tuple)) and value else value
    if not isinstance(given, str) or "@" not in given or given not in args:
        return args
    vm_name, _, host = given.rpartition("@")
    if not vm_name or not host:
        return args
    ctx.ensure_object(State).select_host(host)
    index = args.index(given)
    return [*args[:index], vm_name, *args[index + 1 :]]


json_option = click.option("--json", "as_json", is_flag=True, help="Output JSON.")
