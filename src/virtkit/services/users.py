"""Local users of the API and the web UI: password hashes (argon2id), API tokens, browser
sessions and the throttling of failed logins, all in virtkit's store so that the CLI and the API
share them.

Secrets (tokens, session cookies) are random and shown once; the store keeps only their sha256,
so a copy of the database gives no way in. Passwords are kept as argon2id hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from virtkit.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    NotFound,
    Throttled,
    Unauthenticated,
)
from virtkit.services.roles import validate_role
from virtkit.services.store import Store, register_schema
from virtkit.specs.common import validate_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name     TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    hash     TEXT NOT NULL,
    created  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id         TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL UNIQUE,
    created    REAL NOT NULL,
    expires    REAL,
    last_used  REAL,
    revoked    REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    sha256     TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created    REAL NOT NULL,
    last_seen  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (kind, key, at);
"""
register_schema(SCHEMA)

PASSWORD_MIN = 8
PASSWORD_MAX = 1024  # hashing is costly: no megabyte "passwords" from the network
TOKEN_PREFIX = "vkt_"
SESSION_IDLE = 12 * 3600.0
SESSION_MAX = 7 * 86400.0
# Writing last_used/last_seen on every request would make every read a write.
TOUCH_EVERY = 60.0

# Throttling: FAILURES failed logins within WINDOW seconds for one user (or from one source)
# refuse further attempts for THROTTLE_BASE seconds after the last failure, doubling with each
# failure in the last THROTTLE_MEMORY seconds, up to THROTTLE_MAX.
FAILURES = 5
WINDOW = 300.0
THROTTLE_BASE = 30.0
THROTTLE_MAX = 900.0
THROTTLE_MEMORY = 3600.0

_BAD_LOGIN = "wrong user name or password"
_Keys = list[tuple[str, str]]  # (kind, key) of failed logins: ("user", name), ("source", ip)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created: float


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    name: str
    created: float
    expires: float | None
    last_used: float | None
    revoked: bool


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        raise InvalidInput(
            f"the password is too short: at least {PASSWORD_MIN} characters",
            code="invalid_password",
        )
    if len(password) > PASSWORD_MAX:
        raise InvalidInput(
            f"the password is too long: at most {PASSWORD_MAX} characters",
            code="invalid_password",
        )
    return password


def _user(row: sqlite3.Row) -> User:
    return User(name=row["name"], role=row["role"], created=row["created"])


def _token(row: sqlite3.Row) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        user=row["user"],
        name=row["name"],
        created=row["created"],
        expires=row["expires"],
        last_used=row["last_used"],
        revoked=row["revoked"] is not None,
    )


@dataclass(frozen=True)
class _Verified:
    """A credential as the store had it: whose, the session's CSRF token, its last-use stamp,
    and when it stops being valid (None: never, for a token without expiry)."""

    user: User
    csrf: str | None
    stamp: float
    ends: float | None


_VERIFIED_MAX = 4096  # distinct credentials remembered; more: forget them all and start again

_TokenList = list[TokenInfo]  # ``UserService.list`` hides the builtin inside the class


class UserService:
    def __init__(
        self,
        store: Store,
        *,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        # argon2-cffi's defaults are argon2id with RFC 9106's low-memory parameters.
        self.hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self.now = clock  # tests move time forward (throttling, expiry)
        # Credentials verified lately: sha256 -> (store version, what was found). A hit needs
        # the store unchanged since (any write by any process, a revoke or a password change
        # included, ends it), so it is as true as a fresh query; it saves the query, and lets
        # the API check a caller without leaving the event loop.
        self._verified: dict[str, tuple[tuple[int, ...], _Verified]] = {}
        self._verified_lock = threading.Lock()

    # -- users -------------------------------------------------------------------------------

    def add(self, name: str, role: str, password: str) -> User:
        validate_name(name, "user")
        validate_role(role)
        hashed = self.hasher.hash(_check_password(password))
        user = User(name=name, role=role, created=self.now())
        with self.store.db() as db:
            try:
                db.execute(
                    "INSERT INTO users (name, role, hash, created) VALUES (?, ?, ?, ?)",
                    (name, role, hashed, user.created),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"user {name!r} exists", code="user_exists") from None
        return user

    def list(self) -> list[User]:
        with self.store.db() as db:
            rows = db.execute("SELECT name, role, created FROM users ORDER BY name").fetchall()
        return [_user(r) for r in rows]

    def get(self, name: str) -> User:
        with self.store.db() as db:
            row = db.execute(
                "SELECT name, role, created FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}", code="user_not_found")
        return _user(row)

    def passwd(self, name: str, password: str, *, keep_session: str | None = None) -> None:
        """Set a new password; the user's browser sessions end (but ``keep_session``, the one
        that asked), so a stolen session does not outlive the change."""
        hashed = self.hasher.hash(_check_password(password))
        keep = _sha256(keep_session) if keep_session else ""
        with self.store.db() as db:
            if db.execute("UPDATE users SET hash = ? WHERE name = ?", (hashed, name)).rowcount == 0:
                raise NotFound(f"no user {name!r}", code="user_not_found")
            db.execute("DELETE FROM sessions WHERE user = ? AND sha256 != ?", (name, keep))

    def set_role(self, name: str, role: str) -> User:
        validate_role(role)
        with self.store.db() as db:
            db.execute("BEGIN IMMEDIATE")  # the last-admin check and the change in one step
            current = self._row(db, name)
            if current["role"] == "admin" and role != "admin":
                self._refuse_last_admin(db, name, "demote")
            db.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))
        return User(name=name, role=role, created=current["created"])

    def delete(self, name: str) -> None:
        """Delete a user, revoking their tokens and ending their sessions (a user made again
        with the same name must not inherit them)."""
        with self.store.db() as db:
            db.execute("BEGIN IMMEDIATE")
            if self._row(db, name)["role"] == "admin":
                self._refuse_last_admin(db, name, "delete")
            db.execute("DELETE FROM users WHERE name = ?", (name,))
            db.execute(
                "UPDATE api_tokens SET revoked = ? WHERE user = ? AND revoked IS NULL",
                (self.now(), name),
            )
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def _row(self, db: sqlite3.Connection, name: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute(
            "SELECT name, role, created FROM users WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}", code="user_not_found")
        return row

    def _refuse_last_admin(self, db: sqlite3.Connection, name: str, verb: str) -> None:
        admins = db.execute("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetchone()[0]
        if admins <= 1:
            raise InvalidState(
                f"cannot {verb} {name!r}: it is the last admin (make another admin first)",
                code="last_admin",
            )

    # -- passwords and throttling ------------------------------------------------------------

    def authenticate(self, name: str, password: str, *, source: str) -> User:
        """The user whose password this is. :class:`Unauthenticated` (one message for a wrong
        name and a wrong password), :class:`Throttled` after repeated failures."""
        keys: _Keys = [("user", name), ("source", source)]
        self._check_throttle(keys)
        with self.store.db() as db:
            row = db.execute(
                "SELECT name, role, created, hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            self._verify(self._dummy(), password)  # as slow as a wrong password: no name oracle
            ok = False
        else:
            ok = self._verify(row["hash"], password)
        if not ok:
            self._record_failure(keys)
            raise Unauthenticated(_BAD_LOGIN, code="invalid_credentials")
        if self.hasher.check_needs_rehash(row["hash"]):  # parameters raised since: upgrade it
            with self.store.db() as db:
                db.execute(
                    "UPDATE users SET hash = ? WHERE name = ?", (self.hasher.hash(password), name)
                )
        with self.store.db() as db:
            # Only the user's own count: a success from a source says nothing about the others
            # it may be guessing.
            db.execute("DELETE FROM login_failures WHERE kind = 'user' AND key = ?", (name,))
        return _user(row)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(hashed, password))
        except (VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _check_throttle(self, keys: _Keys) -> None:
        now = self.now()
        wait = 0.0
        with self.store.db() as db:
            for kind, key in keys:
                times = [
                    r[0]
                    for r in db.execute(
                        "SELECT at FROM login_failures WHERE kind = ? AND key = ? AND at >= ? "
                        "ORDER BY at",
                        (kind, key, now - THROTTLE_MEMORY),
                    )
                ]
                if sum(1 for t in times if t >= now - WINDOW) < FAILURES:
                    continue
                delay = min(THROTTLE_BASE * 2 ** (len(times) - FAILURES), THROTTLE_MAX)
                wait = max(wait, times[-1] + delay - now)
        if wait > 0:
            seconds = math.ceil(wait)
            raise Throttled(
                f"too many failed logins: try again in {seconds} seconds", retry_after=seconds
            )

    def _record_failure(self, keys: _Keys) -> None:
        now = self.now()
        with self.store.db() as db:
            db.executemany(
                "INSERT INTO login_failures (kind, key, at) VALUES (?, ?, ?)",
                [(kind, key, now) for kind, key in keys],
            )
            db.execute("DELETE FROM login_failures WHERE at < ?", (now - THROTTLE_MEMORY,))

    # -- API tokens --------------------------------------------------------------------------

    def create_token(self, user: str, name: str, expires_in: float | None) -> tuple[TokenInfo, str]:
        """A new token for ``user``: its info, and the secret (shown this once, kept only as a
        hash). ``expires_in`` in seconds, ``None`` for a token that does not expire."""
        self.get(user)
        if not name or len(name) > 100 or not name.isprintable():
            raise InvalidInput(
                "a token name is 1 to 100 printable characters", code="invalid_token_name"
            )
        if expires_in is not None and not expires_in > 0:
            raise InvalidInput("a token's lifetime must be positive", code="invalid_expiry")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.now()
        info = TokenInfo(
            id=secrets.token_hex(8),
            user=user,
            name=name,
            created=now,
            expires=None if expires_in is None else now + expires_in,
            last_used=None,
            revoked=False,
        )
        with self.store.db() as db:
            db.execute(
                "INSERT INTO api_tokens (id, user, name, sha256, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, user, name, _sha256(secret), now, info.expires),
            )
        return info, secret

    def tokens(self, user: str | None = None) -> _TokenList:
        query = "SELECT * FROM api_tokens"
        params: tuple[str, ...] = ()
        if user is not None:
            query += " WHERE user = ?"
            params = (user,)
        with self.store.db() as db:
            rows = db.execute(query + " ORDER BY created, id", params).fetchall()
        return [_token(r) for r in rows]

    def token(self, token_id: str) -> TokenInfo:
        with self.store.db() as db:
            row = db.execute("SELECT * FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise NotFound(f"no token {token_id!r}", code="token_not_found")
        return _token(row)

    def revoke_token(self, token_id: str) -> None:
        with self.store.db() as db:
            cursor = db.execute(
                "UPDATE api_tokens SET revoked = COALESCE(revoked, ?) WHERE id = ?",
                (self.now(), token_id),
            )
        if cursor.rowcount == 0:
            raise NotFound(f"no token {token_id!r}", code="token_not_found")

    def _recall(self, key: str) -> _Verified | None:
        """What ``key`` verified as, if the store has not changed since and the copy needs no
        write now (expiry not reached, the last-use stamp fresh)."""
        with self._verified_lock:
            kept = self._verified.get(key)
        if kept is None:
            return None
        version, found = kept
        now = self.now()
        if version != self.store.version() or found.stamp < now - TOUCH_EVERY:
            return None
        if found.ends is not None and found.ends <= now:
            return None
        return found

    def _remember(self, key: str, version: tuple[int, ...] | None, found: _Verified) -> None:
        if version is None:
            return
        with self._verified_lock:
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[key] = (version, found)

    def cached_token(self, secret: str) -> User | None:
        """The token's user if it was verified lately and nothing changed since (no database
        query, no thread); None means: ask :meth:`verify_token`."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        found = self._recall(_sha256(secret))
        return found.user if found is not None and found.csrf is None else None

    def cached_session(self, secret: str) -> tuple[User, str] | None:
        """As :meth:`cached_token`, for a session cookie: (user, CSRF token) or None."""
        found = self._recall(_sha256(secret))
        return (found.user, found.csrf) if found is not None and found.csrf is not None else None

    def verify_token(self, secret: str) -> User:
        bad = Unauthenticated("invalid, expired or revoked API token", code="invalid_token")
        if not secret.startswith(TOKEN_PREFIX):
            raise bad
        now = self.now()
        key = _sha256(secret)
        version = self.store.version()  # before the query: a write during it ends the copy
        with self.store.db() as db:
            row = db.execute(
                "SELECT t.id, t.expires, t.revoked, t.last_used, u.name, u.role, u.created "
                "FROM api_tokens t JOIN users u ON u.name = t.user WHERE t.sha256 = ?",
                (_sha256(secret),),
            ).fetchone()
            if row is None or row["revoked"] is not None:
                raise bad
            if row["expires"] is not None and row["expires"] <= now:
                raise bad
            stamp = row["last_used"]
            if stamp is None or stamp < now - TOUCH_EVERY:
                db.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (now, row["id"]))
                stamp, version = now, None  # this write changed the store: copy it next time
        user = _user(row)
        self._remember(key, version, _Verified(user, None, stamp, row["expires"]))
        return user

    # -- browser sessions --------------------------------------------------------------------

    def create_session(self, user: str) -> tuple[str, str]:
        """A new session for ``user``: (the cookie's secret, the CSRF token)."""
        self.get(user)
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.now()
        with self.store.db() as db:
            db.execute(
                "INSERT INTO sessions (sha256, user, csrf, created, last_seen) "
                "VALUES (?, ?, ?, ?, ?)",
                (_sha256(secret), user, csrf, now, now),
            )
            db.execute(
                "DELETE FROM sessions WHERE last_seen < ? OR created < ?",
                (now - SESSION_IDLE, now - SESSION_MAX),
            )
        return secret, csrf

    def verify_session(self, secret: str) -> tuple[User, str]:
        """(the user, the session's CSRF token); :class:`Unauthenticated` if unknown or expired
        (idle for 12 hours, or 7 days old)."""
        now = self.now()
        key = _sha256(secret)
        version = self.store.version()
        with self.store.db() as db:
            row = db.execute(
                "SELECT s.csrf, s.created, s.last_seen, u.name, u.role, u.created AS ucreated "
                "FROM sessions s JOIN users u ON u.name = s.user WHERE s.sha256 = ?",
                (key,),
            ).fetchone()
            expired = row is not None and (
                row["last_seen"] < now - SESSION_IDLE or row["created"] < now - SESSION_MAX
            )
            if row is None or expired:
                if expired:
                    db.execute("DELETE FROM sessions WHERE sha256 = ?", (key,))
                raise Unauthenticated(
                    "the session expired or is unknown: log in again", code="invalid_session"
                )
            stamp = row["last_seen"]
            if stamp < now - TOUCH_EVERY:
                db.execute("UPDATE sessions SET last_seen = ? WHERE sha256 = ?", (now, key))
                stamp, version = now, None
        user = User(name=row["name"], role=row["role"], created=row["ucreated"])
        # The copy ends where the session would: idle from its stamp, or too old.
        ends = min(stamp + SESSION_IDLE, row["created"] + SESSION_MAX)
        self._remember(key, version, _Verified(user, str(row["csrf"]), stamp, ends))
        return user, str(row["csrf"])

    def delete_session(self, secret: str) -> None:
        with self.store.db() as db:
            db.execute("DELETE FROM sessions WHERE sha256 = ?", (_sha256(secret),))


def same_secret(a: str, b: str) -> bool:
    """Compare secrets (CSRF tokens) in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


__all__ = ["TokenInfo", "User", "UserService", "same_secret"]
