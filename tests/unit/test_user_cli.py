"""``virtkit user ...`` and ``virtkit audit`` through click's runner, with the store in a
temporary state directory."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from virtkit import Client, Settings
from virtkit.cli.main import cli
from virtkit.cli.user import parse_duration
from virtkit.errors import InvalidInput, InvalidState, NotFound, Unauthenticated


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "VIRTKIT_STATE_DIR": str(tmp_path / "state"),
        "VIRTKIT_CACHE_DIR": str(tmp_path / "cache"),
        "VIRTKIT_URI": "test:///default",
        "VIRTKIT_CONFIG": "/nonexistent",
    }


@pytest.fixture
def client(env: dict[str, str]) -> Client:
    """The library's view of the same store."""
    return Client(settings=Settings.load(environ=env))


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    result = run(env, *args, stdin=stdin)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_add_with_a_generated_password(env: dict[str, str], client: Client) -> None:
    out = ok(env, "user", "add", "alice", "--role", "operator").output
    password = out.split("password: ")[1].strip()
    assert len(password) >= 20
    assert client.users.authenticate("alice", password, source="t").role == "operator"


def test_add_with_password_stdin_list_and_json(env: dict[str, str], client: Client) -> None:
    out = ok(env, "user", "add", "bob", "--password-stdin", stdin="s3cret-pass\n").output
    assert "password:" not in out
    assert client.users.authenticate("bob", "s3cret-pass", source="t").role == "viewer"
    listing = ok(env, "user", "list").output
    assert "bob" in listing and "viewer" in listing
    (entry,) = json.loads(ok(env, "user", "list", "--json").output)
    assert entry["name"] == "bob" and "hash" not in entry


def test_bad_input_is_refused(env: dict[str, str]) -> None:
    result = run(env, "user", "add", "bob", "--password-stdin", stdin="short\n")
    assert isinstance(result.exception, InvalidInput)
    assert result.exception.code == "invalid_password"
    assert run(env, "user", "add", "bob", "--role", "root").exit_code == 2


def test_passwd_set_role_delete(env: dict[str, str], client: Client) -> None:
    ok(env, "user", "add", "root", "--role", "admin")
    ok(env, "user", "add", "bob")
    ok(env, "user", "passwd", "bob", "--password-stdin", stdin="new-password\n")
    assert client.users.authenticate("bob", "new-password", source="t").name == "bob"
    ok(env, "user", "set-role", "bob", "operator")
    assert client.users.get("bob").role == "operator"
    refused = run(env, "user", "delete", "bob")  # no terminal, no --yes
    assert isinstance(refused.exception, InvalidInput)
    assert refused.exception.code == "confirmation_required"
    ok(env, "user", "delete", "bob", "--yes")
    assert [u.name for u in client.users.list()] == ["root"]
    last = run(env, "user", "delete", "root", "--yes")
    assert isinstance(last.exception, InvalidState) and last.exception.code == "last_admin"
    demote = run(env, "user", "set-role", "root", "viewer")
    assert isinstance(demote.exception, InvalidState)


def test_tokens(env: dict[str, str], client: Client) -> None:
    ok(env, "user", "add", "bob")
    secret = ok(env, "user", "token", "create", "bob", "--name", "ci", "--expires", "30d")
    secret_line = secret.stdout.strip().splitlines()[-1]
    assert secret_line.startswith("vkt_")
    assert client.users.verify_token(secret_line).name == "bob"
    (info,) = json.loads(ok(env, "user", "token", "list", "bob", "--json").output)
    assert info["name"] == "ci" and info["expires"] - info["created"] == pytest.approx(30 * 86400)
    assert "valid" in ok(env, "user", "token", "list").output
    ok(env, "user", "token", "revoke", info["id"])
    assert "revoked" in ok(env, "user", "token", "list", "bob").output
    with pytest.raises(Unauthenticated):
        client.users.verify_token(secret_line)


def test_parse_duration() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90") == 90
    assert parse_duration("never") is None
    for bad in ("", "0d", "soon", "-1h", "5y"):
        with pytest.raises(InvalidInput):
            parse_duration(bad)


def test_ensure_admin(env: dict[str, str], client: Client) -> None:
    out = ok(env, "user", "ensure-admin").output
    password = out.split("password: ")[1].split()[0]
    assert client.users.authenticate("admin", password, source="t").role == "admin"
    again = ok(env, "user", "ensure-admin").output
    assert again == ""
    assert [u.name for u in client.users.list()] == ["admin"]


def test_ensure_admin_leaves_existing_users(env: dict[str, str], client: Client) -> None:
    ok(env, "user", "add", "someone")
    assert ok(env, "user", "ensure-admin").output == ""
    assert [u.name for u in client.users.list()] == ["someone"]


def test_cli_changes_are_audited(env: dict[str, str], client: Client) -> None:
    ok(env, "user", "add", "root", "--role", "admin")
    run(env, "user", "delete", "root", "--yes")  # refused: audited with its code
    entries = client.audit.entries()
    me = "local:" + getpass.getuser()
    assert [(e.user, e.action, e.target, e.result) for e in entries] == [
        (me, "user delete", "root", "last_admin"),
        (me, "user add", "root", "ok"),
    ]
    assert entries[0].source == "cli"
    out = ok(env, "audit", "--user", me, "--action", "user add").output
    assert "user add" in out and "user delete" not in out
    listed = json.loads(ok(env, "audit", "--json", "--limit", "1").output)
    assert [e["result"] for e in listed] == ["last_admin"]


def test_without_argon2_the_extra_is_named(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from virtkit.errors import Unsupported

    monkeypatch.setitem(sys.modules, "argon2", None)
    monkeypatch.delitem(sys.modules, "virtkit.services.users", raising=False)
    result = run(env, "user", "list")
    assert isinstance(result.exception, Unsupported)
    assert "virtkit[api]" in result.exception.message


def test_vm_set_owner(env: dict[str, str]) -> None:
    """An admin on the host gives a VM to an API user who exists (test driver: one run each)."""
    ok(env, "user", "add", "otto", "--role", "operator", "--password-stdin", stdin="pw-otto-12345")
    assert ok(env, "vm", "set", "test", "--owner", "otto").output.strip() == "owner otto"
    assert ok(env, "vm", "set", "test", "--owner", "").output.strip() == "owner (nobody)"
    missing = run(env, "vm", "set", "test", "--owner", "nobody1")
    assert isinstance(missing.exception, NotFound) and "nobody1" in str(missing.exception)
