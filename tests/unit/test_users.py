"""Users, roles, tokens, sessions, login throttling and the audit log, on a real SQLite store
in a temporary directory and real argon2id hashes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from virtkit.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    NotFound,
    Throttled,
    Unauthenticated,
)
from virtkit.services import roles
from virtkit.services.audit import AuditLog
from virtkit.services.store import Store
from virtkit.services.users import FAILURES, SESSION_IDLE, SESSION_MAX, UserService

# argon2id still, with small costs: the suite makes dozens of hashes.
FAST = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "virtkit.db")


@pytest.fixture
def users(store: Store, clock: Clock) -> UserService:
    return UserService(store, hasher=FAST, clock=clock)


def test_add_list_get_and_the_hash_is_argon2id(store: Store) -> None:
    service = UserService(store)  # the default parameters
    user = service.add("alice", "operator", "correct horse")
    assert (user.name, user.role) == ("alice", "operator")
    assert service.list() == [user]
    assert service.get("alice") == user
    assert not hasattr(user, "hash")
    with sqlite3.connect(store.path) as db:
        (hashed,) = db.execute("SELECT hash FROM users WHERE name = 'alice'").fetchone()
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert service.authenticate("alice", "correct horse", source="t") == user


@pytest.mark.parametrize(
    ("name", "role", "password", "code"),
    [
        ("bad name", "viewer", "longenough", "invalid_name"),
        ("-x", "viewer", "longenough", "invalid_name"),
        ("", "viewer", "longenough", "invalid_name"),
        ("bob", "root", "longenough", "unknown_role"),
        ("bob", "viewer", "short", "invalid_password"),
        ("bob", "viewer", "x" * 2000, "invalid_password"),
    ],
)
def test_add_validates(users: UserService, name: str, role: str, password: str, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        users.add(name, role, password)
    assert err.value.code == code
    assert users.list() == []


def test_duplicate_user(users: UserService) -> None:
    users.add("bob", "viewer", "password1")
    with pytest.raises(AlreadyExists):
        users.add("bob", "admin", "password2")
    assert users.get("bob").role == "viewer"


def test_get_unknown(users: UserService) -> None:
    with pytest.raises(NotFound) as err:
        users.get("nobody")
    assert err.value.code == "user_not_found"


def test_wrong_password_and_unknown_user_look_the_same(users: UserService) -> None:
    users.add("bob", "viewer", "password1")
    with pytest.raises(Unauthenticated) as wrong:
        users.authenticate("bob", "password2", source="a")
    with pytest.raises(Unauthenticated) as unknown:
        users.authenticate("nobody", "password1", source="b")
    assert wrong.value.message == unknown.value.message
    assert wrong.value.code == unknown.value.code == "invalid_credentials"


def test_passwd_changes_the_password_and_ends_sessions(users: UserService) -> None:
    users.add("bob", "viewer", "password1")
    session, _ = users.create_session("bob")
    kept, _ = users.create_session("bob")
    users.passwd("bob", "password2", keep_session=kept)
    assert users.authenticate("bob", "password2", source="a").name == "bob"
    with pytest.raises(Unauthenticated):
        users.authenticate("bob", "password1", source="a")
    with pytest.raises(Unauthenticated):
        users.verify_session(session)
    assert users.verify_session(kept)[0].name == "bob"
    with pytest.raises(InvalidInput):
        users.passwd("bob", "short")
    with pytest.raises(NotFound):
        users.passwd("nobody", "password3")


def test_last_admin_cannot_be_deleted_or_demoted(users: UserService) -> None:
    users.add("root", "admin", "password1")
    with pytest.raises(InvalidState) as err:
        users.delete("root")
    assert err.value.code == "last_admin"
    with pytest.raises(InvalidState):
        users.set_role("root", "operator")
    assert users.get("root").role == "admin"
    users.add("second", "admin", "password1")
    assert users.set_role("root", "viewer").role == "viewer"
    with pytest.raises(InvalidState):
        users.delete("second")
    users.delete("root")
    assert [u.name for u in users.list()] == ["second"]


def test_set_role_validates(users: UserService) -> None:
    users.add("bob", "viewer", "password1")
    with pytest.raises(InvalidInput) as err:
        users.set_role("bob", "superuser")
    assert err.value.code == "unknown_role"
    with pytest.raises(NotFound):
        users.set_role("nobody", "viewer")


def test_delete_revokes_tokens_and_sessions(users: UserService) -> None:
    users.add("bob", "operator", "password1")
    info, secret = users.create_token("bob", "ci", None)
    session, _ = users.create_session("bob")
    users.delete("bob")
    # a new user of the same name inherits nothing
    users.add("bob", "admin", "password1")
    with pytest.raises(Unauthenticated):
        users.verify_token(secret)
    with pytest.raises(Unauthenticated):
        users.verify_session(session)
    assert users.token(info.id).revoked


def test_tokens(users: UserService, store: Store, clock: Clock) -> None:
    users.add("bob", "operator", "password1")
    info, secret = users.create_token("bob", "ci", 3600)
    assert secret.startswith("vkt_") and len(secret) > 40
    assert (info.user, info.name, info.expires) == ("bob", "ci", clock.now + 3600)
    with sqlite3.connect(store.path) as db:
        dump = "\n".join(db.iterdump())
    assert secret not in dump  # only its hash is kept
    assert users.verify_token(secret).name == "bob"
    assert users.tokens("bob")[0].last_used == clock.now
    assert users.tokens() == users.tokens("bob")
    assert users.tokens("alice") == []
    clock.now += 3601
    with pytest.raises(Unauthenticated) as err:
        users.verify_token(secret)
    assert err.value.code == "invalid_token"


def test_revoked_and_unknown_tokens(users: UserService) -> None:
    users.add("bob", "viewer", "password1")
    info, secret = users.create_token("bob", "laptop", None)
    users.revoke_token(info.id)
    assert users.tokens()[0].revoked
    for bad in (secret, "vkt_nothing", "garbage"):
        with pytest.raises(Unauthenticated):
            users.verify_token(bad)
    with pytest.raises(NotFound):
        users.revoke_token("nope")


def test_verified_credentials_are_remembered_only_while_the_store_is_unchanged(
    users: UserService, store: Store, clock: Clock
) -> None:
    """The API checks a recently verified token or session without a query; any change to the
    store by anyone (here a second service on the same file, as the CLI in another process)
    ends that, so a revoke, a role change or a deletion counts at once."""
    users.add("root", "admin", "password1")
    users.add("bob", "operator", "password1")
    info, secret = users.create_token("bob", "ci", 3600)
    assert users.cached_token(secret) is None  # never verified
    users.verify_token(secret)  # stamps last_used: a write, so nothing is kept yet
    assert users.cached_token(secret) is None
    assert users.verify_token(secret).name == "bob"
    assert users.cached_token(secret) == users.verify_token(secret)

    other = UserService(store, hasher=FAST, clock=clock)  # e.g. `virtkit user token revoke`
    other.revoke_token(info.id)
    assert users.cached_token(secret) is None
    with pytest.raises(Unauthenticated):
        users.verify_token(secret)

    _, secret = users.create_token("bob", "ci2", 3600)
    users.verify_token(secret)
    users.verify_token(secret)
    assert users.cached_token(secret) is not None
    other.set_role("bob", "viewer")
    assert users.cached_token(secret) is None
    assert users.verify_token(secret).role == "viewer"
    users.verify_token(secret)
    clock.now += 3601  # expired: not even the copy answers
    assert users.cached_token(secret) is None

    cookie, csrf = users.create_session("bob")
    users.verify_session(cookie)
    assert users.cached_session(cookie) == users.verify_session(cookie)
    assert users.cached_session(cookie)[1] == csrf  # type: ignore[index]
    assert users.cached_token(cookie) is None  # a session's secret is no bearer token
    other.delete("bob")
    assert users.cached_session(cookie) is None
    with pytest.raises(Unauthenticated):
        users.verify_session(cookie)


def test_token_input(users: UserService) -> None:
    users.add("bob", "viewer", "password1")
    with pytest.raises(NotFound):
        users.create_token("nobody", "x", None)
    with pytest.raises(InvalidInput):
        users.create_token("bob", "", None)
    with pytest.raises(InvalidInput):
        users.create_token("bob", "x", -5)


def test_sessions_expire_idle_and_absolute(users: UserService, clock: Clock) -> None:
    users.add("bob", "viewer", "password1")
    secret, csrf = users.create_session("bob")
    user, got_csrf = users.verify_session(secret)
    assert (user.name, got_csrf) == ("bob", csrf)
    clock.now += SESSION_IDLE + 1
    with pytest.raises(Unauthenticated):
        users.verify_session(secret)

    secret, _ = users.create_session("bob")
    start = clock.now
    while clock.now < start + SESSION_MAX - 3600:  # active all along: idle expiry never hits
        clock.now += SESSION_IDLE - 60
        users.verify_session(secret)
    clock.now = start + SESSION_MAX + 1
    with pytest.raises(Unauthenticated):
        users.verify_session(secret)

    secret, _ = users.create_session("bob")
    users.delete_session(secret)
    with pytest.raises(Unauthenticated):
        users.verify_session(secret)


def test_a_session_carries_the_current_role(users: UserService) -> None:
    users.add("root", "admin", "password1")
    users.add("bob", "admin", "password1")
    secret, _ = users.create_session("bob")
    users.set_role("bob", "viewer")
    assert users.verify_session(secret)[0].role == "viewer"


def _fail(users: UserService, name: str, source: str, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Unauthenticated):
            users.authenticate(name, "wrong-password", source=source)


def test_throttled_per_user_with_a_growing_delay(users: UserService, clock: Clock) -> None:
    users.add("bob", "viewer", "password1")
    _fail(users, "bob", "10.0.0.1", FAILURES)
    # from another address too, and even with the right password
    with pytest.raises(Throttled) as err:
        users.authenticate("bob", "password1", source="10.0.0.2")
    assert err.value.http_status == 429 and err.value.code == "login_throttled"
    assert err.value.retry_after == 30
    assert "30 seconds" in err.value.message
    clock.now += 31
    _fail(users, "bob", "10.0.0.3", 1)
    with pytest.raises(Throttled) as err:
        users.authenticate("bob", "password1", source="10.0.0.4")
    assert err.value.retry_after == 60  # doubled
    clock.now += 61
    assert users.authenticate("bob", "password1", source="10.0.0.4").name == "bob"
    _fail(users, "bob", "10.0.0.5", 1)  # a success resets the user's count
    assert users.authenticate("bob", "password1", source="10.0.0.6").name == "bob"


def test_throttled_per_source(users: UserService, clock: Clock) -> None:
    users.add("bob", "viewer", "password1")
    for i in range(FAILURES):
        _fail(users, f"guess{i}", "10.9.9.9", 1)
    with pytest.raises(Throttled):
        users.authenticate("bob", "password1", source="10.9.9.9")
    assert users.authenticate("bob", "password1", source="10.0.0.1").name == "bob"
    clock.now += 301
    assert users.authenticate("bob", "password1", source="10.9.9.9").name == "bob"


def test_failures_are_shared_through_the_store(store: Store, clock: Clock) -> None:
    one = UserService(store, hasher=FAST, clock=clock)
    other = UserService(store, hasher=FAST, clock=clock)
    one.add("bob", "viewer", "password1")
    _fail(one, "bob", "cli", FAILURES)
    with pytest.raises(Throttled):
        other.authenticate("bob", "password1", source="10.0.0.1")


def test_few_failures_are_not_throttled(users: UserService) -> None:
    users.add("bob", "viewer", "password1")
    _fail(users, "bob", "x", FAILURES - 1)
    assert users.authenticate("bob", "password1", source="x").name == "bob"


# -- roles --------------------------------------------------------------------------------


def test_roles() -> None:
    assert roles.ROLES == ("viewer", "operator", "admin")
    assert roles.permissions("admin") == frozenset(roles.PERMISSIONS)
    assert len(roles.PERMISSIONS) == 18
    viewer, operator = roles.permissions("viewer"), roles.permissions("operator")
    assert viewer < operator < roles.permissions("admin")
    assert all(p.endswith(".read") for p in viewer)
    assert not roles.allowed("viewer", "vm.power")
    assert not roles.allowed("viewer", "console")
    assert roles.allowed("operator", "vm.power") and roles.allowed("operator", "console")
    assert roles.allowed("operator", "vm.create") and roles.allowed("operator", "storage.read")
    admin_only = ("network.write", "storage.write", "host.write", "host.path", "user.admin",
                  "vm.all")  # fmt: skip
    for denied in (*admin_only, "audit.read"):
        assert not roles.allowed("operator", denied)
        assert roles.allowed("admin", denied)
    assert not roles.allowed("nobody", "vm.read")
    with pytest.raises(ValueError):
        roles.allowed("admin", "vm.fly")
    with pytest.raises(InvalidInput):
        roles.permissions("root")


# -- audit --------------------------------------------------------------------------------


def test_audit_log(store: Store) -> None:
    audit = AuditLog(store)
    audit.record("alice", "user add", "bob", "ok", source="cli")
    audit.record("bob", "POST /api/v1/vms/{name}/start", "web1", 204, source="10.0.0.1")
    audit.record("bob", "POST /api/v1/vms/{name}/stop", "web1", 403, detail="forbidden")
    everything = audit.entries()
    assert [e.action for e in everything] == [
        "POST /api/v1/vms/{name}/stop",
        "POST /api/v1/vms/{name}/start",
        "user add",
    ]
    assert everything[1].result == "204" and everything[1].source == "10.0.0.1"
    assert [e.target for e in audit.entries(user="bob")] == ["web1", "web1"]
    assert len(audit.entries(action="POST /api/v1/vms")) == 2
    assert audit.entries(action="POST /api/v1/vms_") == []  # no LIKE wildcards
    assert len(audit.entries(limit=1)) == 1
    assert audit.entries(since=everything[0].at + 1) == []
    with pytest.raises(InvalidInput):
        audit.entries(limit=0)
