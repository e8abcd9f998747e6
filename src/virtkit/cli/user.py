"""``virtkit user ...``: the users of the API and web UI, their roles and API tokens.

Every change is written to the audit log as ``local:<unix user>``: whoever can run this command
on the host (and read virtkit's store) manages users without logging in.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import re
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state
from virtkit.errors import AlreadyExists, InvalidInput, VirtkitError

ROLES = ("viewer", "operator", "admin")  # as virtkit.services.roles.ROLES (the CLI can't import it)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@click.group("user")
def user() -> None:
    """Users of the API and web UI: roles, passwords, API tokens."""


def actor() -> str:
    """Who the audit log names for a change made on the command line."""
    try:
        return "local:" + getpass.getuser()
    except (KeyError, OSError):  # a UID without a passwd entry (containers)
        return "local:?"


@contextmanager
def audited(state: State, action: str, target: str) -> Iterator[None]:
    """Record ``action`` on ``target``: ``ok``, or the error's code (and re-raise it)."""
    try:
        yield
    except VirtkitError as exc:
        state.client.audit.record(actor(), action, target, exc.code, source="cli")
        raise
    state.client.audit.record(actor(), action, target, "ok", source="cli")


def generate_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def read_password() -> str:
    """One line from stdin (a pipe or a here-string), without its newline."""
    return sys.stdin.readline().rstrip("\r\n")


def parse_duration(text: str) -> float | None:
    """``30d``, ``12h``, ``90m``, ``3600`` (seconds), ``2w``; ``never`` for no expiry."""
    if text.strip().lower() == "never":
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match or float(match[1]) <= 0:
        raise InvalidInput(
            f"invalid duration {text!r}: e.g. 30d, 12h, 90m, 3600 (seconds) or never",
            code="invalid_expiry",
        )
    return float(match[1]) * _UNITS[match[2] or "s"]


def when(seconds: float | None) -> str:
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def print_json(items: list[Any]) -> None:
    json.dump([dataclasses.asdict(i) for i in items], sys.stdout, indent=2)
    sys.stdout.write("\n")


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@pass_state
def user_add(state: State, name: str, role: str, password_stdin: bool) -> None:
    """Add a user; without --password-stdin, a strong password is made and printed once."""
    password = read_password() if password_stdin else generate_password()
    with audited(state, "user add", name):
        state.client.users.add(name, role, password)
    click.echo(f"added user {name} (role {role})")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("list")
@json_option
@pass_state
def user_list(state: State, as_json: bool) -> None:
    """List users and their roles."""
    users = state.client.users.list()
    if as_json:
        print_json(users)
        return
    render.table(["NAME", "ROLE", "CREATED"], [[u.name, u.role, when(u.created)] for u in users])


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@pass_state
def user_passwd(state: State, name: str, password_stdin: bool) -> None:
    """Set a user's password (their browser sessions end); without --password-stdin, a strong
    password is made and printed once."""
    password = read_password() if password_stdin else generate_password()
    with audited(state, "user passwd", name):
        state.client.users.passwd(name, password)
    click.echo(f"password of {name} changed")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@pass_state
def user_set_role(state: State, name: str, role: str) -> None:
    """Change a user's role (refused for the last admin)."""
    with audited(state, "user set-role", name):
        state.client.users.set_role(name, role)
    click.echo(f"{name} is now {role}")


@user.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@pass_state
def user_delete(state: State, name: str, yes: bool) -> None:
    """Delete a user with their API tokens and sessions (refused for the last admin)."""
    users = state.client.users
    users.get(name)
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput(
                "refusing to delete a user without confirmation: add --yes",
                code="confirmation_required",
            )
        click.confirm(f"Delete user {name} and revoke their tokens?", abort=True)
    with audited(state, "user delete", name):
        users.delete(name)
    click.echo(f"deleted user {name}")


@user.command("ensure-admin")
@pass_state
def user_ensure_admin(state: State) -> None:
    """If there are no users yet, add 'admin' with a new password and print it once."""
    users = state.client.users
    if users.list():
        return
    password = generate_password()
    try:
        with audited(state, "user add", "admin"):
            users.add("admin", "admin", password)
    except AlreadyExists:  # another ensure-admin got there first: that one printed it
        return
    click.echo(f"added user admin (role admin), password: {password}")
    click.echo("(shown once: keep it, or set another with `virtkit user passwd admin`)")


@user.group("token")
def token() -> None:
    """API tokens: for scripts, sent as 'Authorization: Bearer <token>'."""


@token.command("create")
@click.argument("name_of_user", metavar="USER")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@click.option("--expires", default="never", show_default=True, help="e.g. 30d, 12h, never.")
@pass_state
def token_create(state: State, name_of_user: str, name: str, expires: str) -> None:
    """Make an API token for USER and print its secret (shown this once only)."""
    expires_in = parse_duration(expires)
    with audited(state, "user token create", name_of_user):
        info, secret = state.client.users.create_token(name_of_user, name, expires_in)
    click.echo(f"token {info.id} for {info.user} (expires {when(info.expires)}):", err=True)
    click.echo(secret)


@token.command("list")
@click.argument("name_of_user", metavar="[USER]", required=False)
@json_option
@pass_state
def token_list(state: State, name_of_user: str | None, as_json: bool) -> None:
    """List API tokens (of USER, or of everyone); never their secrets."""
    tokens = state.client.users.tokens(name_of_user)
    if as_json:
        print_json(tokens)
        return
    render.table(
        ["ID", "USER", "NAME", "CREATED", "EXPIRES", "LAST USED", "STATE"],
        [[t.id, t.user, t.name, when(t.created), when(t.expires), when(t.last_used),
          "revoked" if t.revoked else ("expired" if t.expires and t.expires < time.time()
                                       else "valid")] for t in tokens],
    )  # fmt: skip


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@pass_state
def token_revoke(state: State, token_id: str) -> None:
    """Revoke an API token: it stops working at once."""
    with audited(state, "user token revoke", token_id):
        state.client.users.revoke_token(token_id)
    click.echo(f"revoked token {token_id}")
