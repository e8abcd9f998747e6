"""The request and response bodies of the users, tokens, sessions and audit routes: the API's
contract, kept apart from the services' own types so that neither leaks into the other."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from virtkit.services.audit import AuditEntry
from virtkit.services.users import TokenInfo, User

Role = Literal["viewer", "operator", "admin"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """What every error looks like (the app's handler of virtkit errors)."""

    code: str = Field(description="Stable error code, see docs/errors.md.")
    message: str
    detail: Any = None


class LoginIn(_Request):
    user: str
    password: str


class LoginOut(BaseModel):
    user: str
    role: str
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every unsafe request.")


class WhoAmI(BaseModel):
    user: str
    role: str
    via: Literal["token", "session"]
    permissions: list[str]
    csrf_token: str | None = None


class UserOut(BaseModel):
    name: str
    role: str
    created: float

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(name=user.name, role=user.role, created=user.created)


class UserCreate(_Request):
    name: str
    role: Role = "viewer"
    password: str = Field(description="At least 8 characters.")


class UserPatch(_Request):
    role: Role | None = None
    password: str | None = None


class PasswordChange(_Request):
    old_password: str
    new_password: str


class TokenOut(BaseModel):
    id: str
    user: str
    name: str
    created: float
    expires: float | None
    last_used: float | None
    revoked: bool

    @classmethod
    def of(cls, info: TokenInfo) -> TokenOut:
        return cls(
            id=info.id,
            user=info.user,
            name=info.name,
            created=info.created,
            expires=info.expires,
            last_used=info.last_used,
            revoked=info.revoked,
        )


class TokenCreate(_Request):
    name: str = "api"
    expires_in: float | None = Field(
        None, gt=0, description="Seconds until it expires; none for a token that does not."
    )
    user: str | None = Field(None, description="Whose token (admins only; default: yours).")


class TokenCreated(BaseModel):
    token: TokenOut
    secret: str = Field(description="The token itself: shown this once, never again.")


class AuditOut(BaseModel):
    id: int
    at: float
    user: str
    action: str
    target: str
    result: str
    detail: str | None
    source: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(
            id=entry.id,
            at=entry.at,
            user=entry.user,
            action=entry.action,
            target=entry.target,
            result=entry.result,
            detail=entry.detail,
            source=entry.source,
        )
