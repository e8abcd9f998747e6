"""What every page shares: who is looking (from the session cookie), the relative root of the
URLs, Jinja2 with virtkit's filters, and the error page.

Every URL a page holds is relative (``<base href>`` is computed from the request's depth), so
the UI works behind a reverse proxy under any sub-path without being told the prefix.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from virtkit.api.security import SESSION_COOKIE, Principal
from virtkit.errors import PermissionDenied, VirtkitError
from virtkit.services.roles import allowed
from virtkit.specs.units import format_duration, format_size

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def root_of(path: str) -> str:
    """The relative URL of the UI's root from ``path``: ``./`` for ``/`` and ``/vms``,
    ``../`` for ``/vms/web1``."""
    depth = path.count("/") - 1
    return "../" * depth if depth > 0 else "./"


@dataclass(frozen=True)
class Viewer:
    user: str
    role: str
    csrf: str

    def may(self, permission: str) -> bool:
        return allowed(self.role, permission)


class LoginFirst(Exception):
    """No valid session: the page answers with a redirect to the login page."""


def viewer(request: Request) -> Viewer:
    """The logged-in user of a page request (a FastAPI dependency; sync: SQLite)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginFirst
    try:
        user, csrf = request.app.state.ctx.client.users.verify_session(cookie)
    except VirtkitError:
        raise LoginFirst from None
    request.state.principal = Principal(user.name, user.role, "session")
    return Viewer(user.name, user.role, csrf)


def need(who: Viewer, permission: str) -> None:
    if not who.may(permission):
        raise PermissionDenied(
            f"role {who.role!r} of user {who.user!r} lacks the permission {permission!r}",
            code="forbidden",
        )


def page(
    request: Request, template: str, who: Viewer | None, status: int = 200, **values: Any
) -> HTMLResponse:
    root = root_of(request.url.path)
    here = request.url.path.lstrip("/") + (f"?{request.url.query}" if request.url.query else "")
    values.update(request=request, root=root, here=here or "./", who=who, now=time.time())
    values.setdefault("assets_ok", request.app.state.ui_assets_ok)
    return templates.TemplateResponse(request, template, values, status_code=status)


def login_redirect(request: Request) -> Response:
    target = request.url.path.lstrip("/")
    if request.url.query:
        target += "?" + request.url.query
    nxt = f"?next={target}" if target else ""
    # A relative Location: the browser resolves it against the page it asked for.
    return RedirectResponse(f"{root_of(request.url.path)}login{nxt}", status_code=303)


F = TypeVar("F", bound=Callable[..., Response])


def html(fn: F) -> F:
    """A page route: a virtkit error while gathering its data becomes the error page (with
    the error's status and message), not the API's JSON."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return fn(*args, **kwargs)
        except VirtkitError as exc:
            request: Request = kwargs["request"]
            who = kwargs.get("who")
            return page(request, "error.html", who, status=exc.http_status, error=exc)

    return wrapper  # type: ignore[return-value]


# -- filters -----------------------------------------------------------------------------------


def size(value: int | None) -> str:
    """Bytes as people read them (512 MiB, 1.5 GiB); ``-`` for none."""
    return "-" if value is None else format_size(int(value))


def when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def sparkline(values: list[float], width: int = 320, height: int = 60) -> str:
    """The points of an SVG polyline for ``values`` (oldest first), scaled to the box."""
    if not values:
        return ""
    top = max(values) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - (v / top) * (height - 4) - 2:.1f}" for i, v in enumerate(values)
    )


templates.env.filters.update(size=size, duration=format_duration, when=when)
templates.env.globals.update(sparkline=sparkline)
