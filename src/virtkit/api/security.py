"""Who is asking, and may they: API tokens and browser sessions (with CSRF), role permissions,
the users/tokens/audit routes, and the audit middleware. ``install(app)`` puts it all in place.

Credentials: ``Authorization: Bearer vkt_...`` (scripts), or the ``virtkit_session`` cookie set
by ``POST /api/v1/login`` (the browser). A cookie rides along with any request the browser makes,
so unsafe methods with a cookie also need the session's token in ``X-CSRF-Token``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtkit.api.auth_models import (
    AuditOut,
    ErrorOut,
    LoginIn,
    LoginOut,
    PasswordChange,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    UserPatch,
    WhoAmI,
)
from virtkit.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from virtkit.services.audit import AuditLog
from virtkit.services.roles import PERMISSIONS, allowed, permissions
from virtkit.services.users import SESSION_MAX, UserService, same_secret

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
SESSION_COOKIE = "virtkit_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    via: Literal["token", "session"]


def _users(request: Request) -> UserService:
    users: UserService = request.app.state.ctx.client.users
    return users


def _audit(request: Request) -> AuditLog:
    audit: AuditLog = request.app.state.ctx.client.audit
    return audit


def _source(request: Request) -> str:
    return request.client.host if request.client else "-"


async def principal(request: Request) -> Principal:
    """The caller, from a bearer token or the session cookie; also kept on
    ``request.state.principal`` (the audit middleware reads it)."""
    users = _users(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("use 'Authorization: Bearer <token>'", code="invalid_token")
        # A token verified lately, with the store unchanged since, is known without a query;
        # else ask the store (synchronous SQLite: off the event loop).
        user = users.cached_token(secret.strip())
        if user is None:
            user = await run_in_threadpool(users.verify_token, secret.strip())
        who = Principal(user.name, user.role, "token")
        request.state.principal = who
        return who
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("log in, or send an API token (Authorization: Bearer <token>)")
    known = users.cached_session(cookie)
    if known is None:
        known = await run_in_threadpool(users.verify_session, cookie)
    user, csrf = known
    who = Principal(user.name, user.role, "session")
    request.state.principal = who  # before the CSRF check: the audit log names who it was
    request.state.csrf_token = csrf
    request.state.session = cookie
    if request.method in UNSAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if not sent or not same_secret(sent, csrf):
            raise PermissionDenied(
                f"missing or wrong {CSRF_HEADER} header (the csrf_token of the login)",
                code="csrf_failed",
            )
    return who


Caller = Annotated[Principal, Depends(principal)]


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the caller if their role has ``permission``."""
    if permission not in PERMISSIONS:  # a typo in a route fails at import, not at request
        raise ValueError(f"unknown permission {permission!r}")

    async def dependency(who: Caller) -> Principal:
        if not allowed(who.role, permission):
            raise PermissionDenied(
                f"role {who.role!r} of user {who.user!r} lacks the permission {permission!r}",
                code="forbidden",
            )
        return who

    return dependency


Admin = Annotated[Principal, Depends(require("user.admin"))]

_DESCRIPTIONS = {
    401: "No valid token or session (`unauthenticated`, `invalid_token`, `invalid_session`, "
    "`invalid_credentials`).",
    403: "The role lacks the permission (`forbidden`), or the CSRF header is missing "
    "(`csrf_failed`).",
    404: "No such user or token.",
    409: "The name is taken, or the last admin would go (`last_admin`).",
    422: "Invalid input.",
    429: "Too many failed logins (`login_throttled`).",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut, "description": _DESCRIPTIONS[s]} for s in statuses}


_AUTHED = (401, 403)
router = APIRouter(prefix=PREFIX, tags=["users"])


# -- sessions ----------------------------------------------------------------------------------


@router.post("/login", responses=_errors(401, 422, 429))
def login(body: LoginIn, request: Request, response: Response) -> LoginOut:
    """Log in with a password: sets the session cookie, returns the CSRF token."""
    request.state.audit_user = body.user  # failed attempts are audited under the name tried
    users = _users(request)
    user = users.authenticate(body.user, body.password, source=_source(request))
    secret, csrf = users.create_session(user.name)
    request.state.principal = Principal(user.name, user.role, "session")
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(SESSION_MAX),
        path="/",
        httponly=True,  # no script reads it: an XSS cannot carry the session away
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return LoginOut(user=user.name, role=user.role, csrf_token=csrf)


@router.post("/logout", status_code=204, responses=_errors(*_AUTHED))
def logout(who: Caller, request: Request) -> Response:
    """End this browser session (a token stays valid: revoke it under /tokens)."""
    response = Response(status_code=204)
    if who.via == "session":
        _users(request).delete_session(request.state.session)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/whoami", responses=_errors(*_AUTHED))
async def whoami(who: Caller, request: Request) -> WhoAmI:
    """The caller: user, role, what the role may do, and the CSRF token of a session."""
    return WhoAmI(
        user=who.user,
        role=who.role,
        via=who.via,
        permissions=sorted(permissions(who.role)),
        csrf_token=getattr(request.state, "csrf_token", None) if who.via == "session" else None,
    )


# -- API tokens --------------------------------------------------------------------------------


def _may_manage(who: Principal, user: str) -> bool:
    return who.user == user or allowed(who.role, "user.admin")


@router.get("/tokens", responses=_errors(*_AUTHED))
def list_tokens(
    who: Caller,
    request: Request,
    user: Annotated[str | None, Query(description="Whose tokens (others: admins only).")] = None,
    all_users: Annotated[bool, Query(alias="all", description="Everyone's (admins).")] = False,
) -> list[TokenOut]:
    """API tokens: your own; an admin may ask for anyone's, or all."""
    if all_users or (user is not None and user != who.user):
        if not allowed(who.role, "user.admin"):
            raise PermissionDenied("only admins see other users' tokens", code="forbidden")
        owner = None if all_users else user
    else:
        owner = who.user
    return [TokenOut.of(t) for t in _users(request).tokens(owner)]


@router.post("/tokens", status_code=201, responses=_errors(*_AUTHED, 404, 422))
def create_token(body: TokenCreate, who: Caller, request: Request) -> TokenCreated:
    """A new API token; the secret is in this answer only."""
    owner = body.user or who.user
    if not _may_manage(who, owner):
        raise PermissionDenied("only admins make tokens for other users", code="forbidden")
    request.state.audit_target = owner
    info, secret = _users(request).create_token(owner, body.name, body.expires_in)
    return TokenCreated(token=TokenOut.of(info), secret=secret)


@router.delete("/tokens/{token_id}", status_code=204, responses=_errors(*_AUTHED, 404))
def revoke_token(token_id: str, who: Caller, request: Request) -> Response:
    """Revoke an API token (yours; an admin's: anyone's)."""
    users = _users(request)
    try:
        info = users.token(token_id)
    except NotFound:
        info = None
    if info is None or not _may_manage(who, info.user):
        # The same answer as for no token at all: ids of others' tokens are not revealed.
        raise NotFound(f"no token {token_id!r}", code="token_not_found")
    users.revoke_token(token_id)
    return Response(status_code=204)


# -- users -------------------------------------------------------------------------------------


@router.get("/users", responses=_errors(*_AUTHED))
def list_users(who: Admin, request: Request) -> list[UserOut]:
    return [UserOut.of(u) for u in _users(request).list()]


@router.post("/users", status_code=201, responses=_errors(*_AUTHED, 409, 422))
def create_user(body: UserCreate, who: Admin, request: Request) -> UserOut:
    request.state.audit_target = body.name
    return UserOut.of(_users(request).add(body.name, body.role, body.password))


@router.get("/users/{name}", responses=_errors(*_AUTHED, 404))
def get_user(name: str, who: Admin, request: Request) -> UserOut:
    return UserOut.of(_users(request).get(name))


@router.patch("/users/{name}", responses=_errors(*_AUTHED, 404, 409, 422))
def change_user(name: str, body: UserPatch, who: Admin, request: Request) -> UserOut:
    """Set a user's role and/or password."""
    if body.role is None and body.password is None:
        raise InvalidInput("give a role, a password or both", code="nothing_to_set")
    users = _users(request)
    users.get(name)
    if body.password is not None:
        # Checked and set before the role: a bad password leaves the role unchanged too.
        keep = request.state.session if who.via == "session" and who.user == name else None
        users.passwd(name, body.password, keep_session=keep)
    if body.role is not None:
        users.set_role(name, body.role)
    request.state.audit_detail = ", ".join(
        f for f, v in (("role", body.role), ("password", body.password)) if v is not None
    )
    return UserOut.of(users.get(name))


@router.delete("/users/{name}", status_code=204, responses=_errors(*_AUTHED, 404, 409))
def delete_user(name: str, who: Admin, request: Request) -> Response:
    """Delete a user, with their tokens and sessions."""
    _users(request).delete(name)
    return Response(status_code=204)


@router.post("/users/{name}/password", status_code=204, responses=_errors(*_AUTHED, 422, 429))
def change_own_password(name: str, body: PasswordChange, who: Caller, request: Request) -> Response:
    """Change your own password, proving the old one (throttled like a login)."""
    if who.user != name:
        raise PermissionDenied(
            "you can change only your own password (admins: PATCH /users/{name})",
            code="forbidden",
        )
    users = _users(request)
    users.authenticate(name, body.old_password, source=_source(request))
    keep = request.state.session if who.via == "session" else None
    users.passwd(name, body.new_password, keep_session=keep)
    return Response(status_code=204)


# -- audit -------------------------------------------------------------------------------------


@router.get("/audit", responses=_errors(*_AUTHED, 422))
def audit_entries(
    who: Annotated[Principal, Depends(require("audit.read"))],
    request: Request,
    user: str | None = None,
    action: Annotated[str | None, Query(description="A prefix, e.g. 'POST /api/v1/vms'.")] = None,
    since: Annotated[float | None, Query(description="Seconds since the epoch.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    """The audit log, newest first."""
    entries = _audit(request).entries(user=user, action=action, since=since, limit=limit)
    return [AuditOut.of(e) for e in entries]


# -- the audit middleware ----------------------------------------------------------------------


def _audited_read(path: str) -> bool:
    """Reads that hand out what the host keeps for its VMs: a volume's bytes (a VM's disk)."""
    return path.startswith(PREFIX + "/pools/") and path.endswith("/content")


class AuditMiddleware:
    """Records every unsafe request under ``/api/v1`` once its response is sent (and a volume
    download, which hands out a disk's bytes): who (the
    principal, the name tried for a login, or ``-``), ``METHOD /route/{template}``, the path
    parameters as target, and the status code. Plain ASGI (no BaseHTTPMiddleware): streaming
    responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or (scope["method"] not in UNSAFE_METHODS and not _audited_read(scope["path"]))
            or not scope["path"].startswith(PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # the routes' request.state is this same dict
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            await self._record(scope, status)

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope["state"]
        who = state.get("principal")
        user = who.user if isinstance(who, Principal) else state.get("audit_user", "-")
        route = scope.get("route")
        template = getattr(route, "path", None) or scope["path"][:200]
        if not template.startswith(PREFIX + "/"):  # a route of a router included under PREFIX
            template = PREFIX + template
        params = scope.get("path_params") or {}
        target = state.get("audit_target") or "/".join(str(v) for v in params.values()) or "-"
        client = scope.get("client")
        try:
            audit: AuditLog = scope["app"].state.ctx.client.audit
            # The response is out already; the write runs in a worker thread, off the loop.
            await run_in_threadpool(
                audit.record,
                str(user)[:100],
                f"{scope['method']} {template}",
                str(target)[:200],
                status,
                detail=state.get("audit_detail") or None,
                source=client[0] if client else None,
            )
        except Exception:  # the request is done: a failed audit write is logged, not raised
            log.exception("could not write the audit log entry")


def install(app: FastAPI) -> None:
    """Add the users, tokens, sessions and audit routes, and the audit middleware."""
    app.include_router(router)
    app.add_middleware(AuditMiddleware)


__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "Principal", "install", "principal", "require"]
