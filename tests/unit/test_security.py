"""The API's security layer on a tiny FastAPI app: sessions and CSRF, tokens, role permissions,
login throttling, the user and token routes, and the audit middleware."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import pytest
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from virtkit import Client, Settings
from virtkit.api.security import CSRF_HEADER, SESSION_COOKIE, Principal, install, require
from virtkit.errors import VirtkitError
from virtkit.services.audit import AuditLog
from virtkit.services.store import Store
from virtkit.services.users import UserService

FAST = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_app(client: Any) -> FastAPI:
    app = FastAPI()
    app.state.ctx = SimpleNamespace(client=client)

    # What the real app's handler does (src/virtkit/api/app.py, written separately).
    @app.exception_handler(VirtkitError)
    async def on_error(request: Request, exc: VirtkitError) -> JSONResponse:
        body = {"code": exc.code, "message": exc.message, "detail": exc.hint}
        return JSONResponse(body, status_code=exc.http_status)

    install(app)

    @app.post("/api/v1/vms/{name}/start", status_code=204)
    def start(name: str, who: Annotated[Principal, Depends(require("vm.power"))]) -> None:
        return None

    @app.post("/api/v1/networks/{name}/stop", status_code=204)
    def stop_net(name: str, who: Annotated[Principal, Depends(require("network.write"))]) -> None:
        return None

    @app.get("/api/v1/vms")
    def vms(who: Annotated[Principal, Depends(require("vm.read"))]) -> list[str]:
        return ["web1"]

    return app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def services(tmp_path: Path, clock: Clock) -> SimpleNamespace:
    store = Store(tmp_path / "virtkit.db")
    users = UserService(store, hasher=FAST, clock=clock)
    users.add("root", "admin", "rootpassword")
    users.add("olga", "operator", "olgapassword")
    users.add("vic", "viewer", "vicpassword")
    return SimpleNamespace(users=users, audit=AuditLog(store))


@pytest.fixture
def api(services: SimpleNamespace) -> Iterator[TestClient]:
    with TestClient(make_app(services)) as client:
        yield client


def login(api: TestClient, user: str, password: str) -> str:
    response = api.post("/api/v1/login", json={"user": user, "password": password})
    assert response.status_code == 200, response.text
    csrf: str = response.json()["csrf_token"]
    return csrf


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_login_sets_a_strict_httponly_cookie(api: TestClient) -> None:
    response = api.post("/api/v1/login", json={"user": "olga", "password": "olgapassword"})
    assert response.status_code == 200
    body = response.json()
    assert (body["user"], body["role"]) == ("olga", "operator")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here
    me = api.get("/api/v1/whoami").json()
    assert me["user"] == "olga" and me["via"] == "session"
    assert me["csrf_token"] == body["csrf_token"]
    assert "vm.power" in me["permissions"] and "user.admin" not in me["permissions"]


def test_the_cookie_is_secure_over_https(services: SimpleNamespace) -> None:
    with TestClient(make_app(services), base_url="https://testserver") as client:
        response = client.post("/api/v1/login", json={"user": "vic", "password": "vicpassword"})
    assert "Secure" in response.headers["set-cookie"]


def test_wrong_login(api: TestClient) -> None:
    response = api.post("/api/v1/login", json={"user": "olga", "password": "nope-nope"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert SESSION_COOKIE not in api.cookies
    assert api.get("/api/v1/whoami").status_code == 401


def test_login_body_is_strict(api: TestClient) -> None:
    response = api.post(
        "/api/v1/login", json={"user": "olga", "password": "olgapassword", "admin": True}
    )
    assert response.status_code == 422


def test_csrf_is_needed_for_unsafe_methods_with_a_session(api: TestClient) -> None:
    csrf = login(api, "olga", "olgapassword")
    assert api.get("/api/v1/vms").status_code == 200  # safe methods need none
    missing = api.post("/api/v1/vms/web1/start")
    assert missing.status_code == 403 and missing.json()["code"] == "csrf_failed"
    wrong = api.post("/api/v1/vms/web1/start", headers={CSRF_HEADER: csrf[:-2] + "xx"})
    assert wrong.status_code == 403
    assert api.post("/api/v1/vms/web1/start", headers={CSRF_HEADER: csrf}).status_code == 204


def test_no_credentials(api: TestClient) -> None:
    response = api.get("/api/v1/vms")
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
    assert api.get("/api/v1/vms", headers={"Authorization": "Basic eDp5"}).status_code == 401


def test_token_works_until_revoked(api: TestClient, services: SimpleNamespace) -> None:
    _, secret = services.users.create_token("olga", "ci", None)
    assert api.get("/api/v1/vms", headers=bearer(secret)).status_code == 200
    # tokens need no CSRF header: no browser sends them by itself
    assert api.post("/api/v1/vms/web1/start", headers=bearer(secret)).status_code == 204
    (info,) = api.get("/api/v1/tokens", headers=bearer(secret)).json()
    assert info["name"] == "ci" and "secret" not in info
    assert api.delete(f"/api/v1/tokens/{info['id']}", headers=bearer(secret)).status_code == 204
    response = api.get("/api/v1/vms", headers=bearer(secret))
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"


def test_expired_token(api: TestClient, services: SimpleNamespace, clock: Clock) -> None:
    _, secret = services.users.create_token("vic", "short", 60)
    assert api.get("/api/v1/vms", headers=bearer(secret)).status_code == 200
    clock.now += 61
    assert api.get("/api/v1/vms", headers=bearer(secret)).status_code == 401


def test_create_token_through_the_api(api: TestClient) -> None:
    csrf = login(api, "vic", "vicpassword")
    response = api.post(
        "/api/v1/tokens", json={"name": "laptop", "expires_in": 3600}, headers={CSRF_HEADER: csrf}
    )
    assert response.status_code == 201
    secret = response.json()["secret"]
    assert secret.startswith("vkt_")
    api.cookies.clear()
    assert api.get("/api/v1/whoami", headers=bearer(secret)).json()["user"] == "vic"
    others = api.post("/api/v1/tokens", json={"user": "root"}, headers=bearer(secret))
    assert others.status_code == 403


def test_tokens_of_others(api: TestClient, services: SimpleNamespace) -> None:
    info, _ = services.users.create_token("root", "admin-ci", None)
    _, vic = services.users.create_token("vic", "mine", None)
    _, root = services.users.create_token("root", "other", None)
    assert api.delete(f"/api/v1/tokens/{info.id}", headers=bearer(vic)).status_code == 404
    assert api.get("/api/v1/tokens?all=true", headers=bearer(vic)).status_code == 403
    assert len(api.get("/api/v1/tokens?all=true", headers=bearer(root)).json()) == 3
    vics = api.get("/api/v1/tokens?user=vic", headers=bearer(root)).json()
    assert [t["name"] for t in vics] == ["mine"]
    assert api.delete(f"/api/v1/tokens/{info.id}", headers=bearer(root)).status_code == 204


def test_viewer_lacks_vm_power_and_operator_lacks_network_write(
    api: TestClient, services: SimpleNamespace
) -> None:
    _, vic = services.users.create_token("vic", "t", None)
    _, olga = services.users.create_token("olga", "t", None)
    _, root = services.users.create_token("root", "t", None)
    denied = api.post("/api/v1/vms/web1/start", headers=bearer(vic))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    assert "viewer" in denied.json()["message"] and "vm.power" in denied.json()["message"]
    assert api.post("/api/v1/vms/web1/start", headers=bearer(olga)).status_code == 204
    denied = api.post("/api/v1/networks/default/stop", headers=bearer(olga))
    assert denied.status_code == 403 and "network.write" in denied.json()["message"]
    assert api.post("/api/v1/networks/default/stop", headers=bearer(root)).status_code == 204
    assert api.get("/api/v1/users", headers=bearer(olga)).status_code == 403
    assert api.get("/api/v1/audit", headers=bearer(olga)).status_code == 403


def test_login_throttled_after_five_failures(api: TestClient) -> None:
    for _ in range(5):
        bad = api.post("/api/v1/login", json={"user": "olga", "password": "wrong-pass"})
        assert bad.status_code == 401
    response = api.post("/api/v1/login", json={"user": "olga", "password": "olgapassword"})
    assert response.status_code == 429
    assert response.json()["code"] == "login_throttled"
    assert "seconds" in response.json()["message"]


def test_user_admin_routes(api: TestClient, services: SimpleNamespace) -> None:
    _, root = services.users.create_token("root", "t", None)
    h = bearer(root)
    made = api.post("/api/v1/users", json={"name": "new", "password": "newpassword"}, headers=h)
    assert made.status_code == 201 and made.json()["role"] == "viewer"
    dup = api.post("/api/v1/users", json={"name": "new", "password": "newpassword"}, headers=h)
    assert dup.status_code == 409
    short = api.post("/api/v1/users", json={"name": "x", "password": "short"}, headers=h)
    assert short.status_code == 422 and short.json()["code"] == "invalid_password"
    badrole = api.post(
        "/api/v1/users", json={"name": "y", "password": "longenough", "role": "god"}, headers=h
    )
    assert badrole.status_code == 422
    assert [u["name"] for u in api.get("/api/v1/users", headers=h).json()] == [
        "new", "olga", "root", "vic"
    ]  # fmt: skip
    assert api.get("/api/v1/users/new", headers=h).json()["role"] == "viewer"
    patched = api.patch("/api/v1/users/new", json={"role": "operator"}, headers=h)
    assert patched.status_code == 200 and patched.json()["role"] == "operator"
    assert api.patch("/api/v1/users/new", json={}, headers=h).status_code == 422
    api.patch("/api/v1/users/new", json={"password": "changed-pw"}, headers=h)
    assert services.users.authenticate("new", "changed-pw", source="t").role == "operator"
    assert api.delete("/api/v1/users/new", headers=h).status_code == 204
    assert api.get("/api/v1/users/new", headers=h).status_code == 404


def test_last_admin_cannot_be_deleted(api: TestClient, services: SimpleNamespace) -> None:
    _, root = services.users.create_token("root", "t", None)
    response = api.delete("/api/v1/users/root", headers=bearer(root))
    assert response.status_code == 409 and response.json()["code"] == "last_admin"
    demote = api.patch("/api/v1/users/root", json={"role": "viewer"}, headers=bearer(root))
    assert demote.status_code == 409
    assert services.users.get("root").role == "admin"


def test_own_password_change(api: TestClient, services: SimpleNamespace) -> None:
    csrf = login(api, "vic", "vicpassword")
    h = {CSRF_HEADER: csrf}
    wrong = api.post(
        "/api/v1/users/vic/password",
        json={"old_password": "not-it-at-all", "new_password": "vicpassword2"},
        headers=h,
    )
    assert wrong.status_code == 401
    other = api.post(
        "/api/v1/users/olga/password",
        json={"old_password": "olgapassword", "new_password": "hijacked!"},
        headers=h,
    )
    assert other.status_code == 403
    ok = api.post(
        "/api/v1/users/vic/password",
        json={"old_password": "vicpassword", "new_password": "vicpassword2"},
        headers=h,
    )
    assert ok.status_code == 204
    assert api.get("/api/v1/whoami").status_code == 200  # this session stays
    assert services.users.authenticate("vic", "vicpassword2", source="t").name == "vic"


def test_logout(api: TestClient) -> None:
    csrf = login(api, "vic", "vicpassword")
    cookie = api.cookies[SESSION_COOKIE]
    assert api.post("/api/v1/logout", headers={CSRF_HEADER: csrf}).status_code == 204
    api.cookies.set(SESSION_COOKIE, cookie)  # even if a copy of the cookie survives
    assert api.get("/api/v1/whoami").status_code == 401


def test_audit_records_changes_and_logins(api: TestClient, services: SimpleNamespace) -> None:
    api.post("/api/v1/login", json={"user": "olga", "password": "wrong-pass"})
    csrf = login(api, "olga", "olgapassword")
    api.post("/api/v1/vms/web1/start", headers={CSRF_HEADER: csrf})
    api.post("/api/v1/vms/web2/start")  # no CSRF header: refused, and audited
    api.get("/api/v1/vms")  # reads are not audited
    _, vic = services.users.create_token("vic", "t", None)
    api.post("/api/v1/networks/default/stop", headers=bearer(vic))
    entries = services.audit.entries()
    assert [(e.user, e.action, e.target, e.result) for e in reversed(entries)] == [
        ("olga", "POST /api/v1/login", "-", "401"),
        ("olga", "POST /api/v1/login", "-", "200"),
        ("olga", "POST /api/v1/vms/{name}/start", "web1", "204"),
        ("olga", "POST /api/v1/vms/{name}/start", "web2", "403"),
        ("vic", "POST /api/v1/networks/{name}/stop", "default", "403"),
    ]
    assert entries[0].source == "testclient"

    _, root = services.users.create_token("root", "t", None)
    listed = api.get("/api/v1/audit?user=olga&limit=2", headers=bearer(root)).json()
    assert [e["target"] for e in listed] == ["web2", "web1"]
    logins = api.get("/api/v1/audit", params={"action": "POST /api/v1/login"}, headers=bearer(root))
    assert len(logins.json()) == 2
    api.post("/api/v1/users", json={"name": "zed", "password": "zedpassword"}, headers=bearer(root))
    newest = services.audit.entries(limit=1)[0]
    assert (newest.user, newest.action, newest.target) == ("root", "POST /api/v1/users", "zed")


def test_unauthenticated_changes_are_audited_as_nobody(
    api: TestClient, services: SimpleNamespace
) -> None:
    api.post("/api/v1/vms/web1/start")
    (entry,) = services.audit.entries()
    assert (entry.user, entry.result) == ("-", "401")


def test_openapi_declares_the_errors(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    login_op = doc["paths"]["/api/v1/login"]["post"]
    assert {"200", "401", "422", "429"} <= set(login_op["responses"])
    assert doc["components"]["schemas"]["LoginIn"]["additionalProperties"] is False
    assert "403" in doc["paths"]["/api/v1/users/{name}"]["delete"]["responses"]


def test_with_a_real_client(tmp_path: Path) -> None:
    """The composition root: Client.users and Client.audit share one store file."""
    settings = Settings(uri="test:///default", state_dir=tmp_path / "s", cache_dir=tmp_path / "c")
    client = Client(settings=settings)
    client.users.add("root", "admin", "rootpassword")
    with TestClient(make_app(client)) as api:
        csrf = login(api, "root", "rootpassword")
        assert api.post("/api/v1/vms/web1/start", headers={CSRF_HEADER: csrf}).status_code == 204
    again = Client(settings=settings)
    assert [e.target for e in again.audit.entries()] == ["web1", "-"]
    assert (settings.state_dir / "virtkit.db").is_file()
