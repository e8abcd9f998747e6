"""One error shape for the whole API: ``{"code", "message", "detail"}``, from virtkit's error
tree (``err.http_status``), FastAPI's validation errors (422) and anything unexpected (500,
logged with its traceback, never shown to the client)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from virtkit.errors import VirtkitError

log = logging.getLogger("virtkit.api")


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: Any = None


def _desc(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


# ``responses=`` for routes: every route may answer these
COMMON: dict[int | str, dict[str, Any]] = {
    401: _desc("Not authenticated (no, an unknown, a revoked or an expired credential)."),
    403: _desc(
        "Authenticated, but the role does not allow this (or the CSRF token is wrong, or a host "
        "path outside the storage pools needs `host.path`)."
    ),
    422: _desc("Invalid input: the message names each problem."),
    503: _desc("libvirt cannot be reached."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _desc("No such object.")}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _desc("The object exists already, is in use, or is in the wrong state.")
}


def error_response(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    body = {"code": code, "message": message, "detail": detail}
    return JSONResponse(body, status_code=status)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "throttled",
}


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    problems = []
    detail = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        where = ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
        kind = str(error.get("type", ""))
        if kind == "extra_forbidden":
            text = "unknown field"
        elif kind == "missing":
            text = "required"
        elif kind == "json_invalid":
            text = "malformed JSON"
        else:
            text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where}: {text}" if where else text)
        detail.append({"loc": loc, "type": kind, "msg": text})
    return "invalid request: " + "; ".join(problems), detail


def install(app: FastAPI) -> None:
    @app.exception_handler(VirtkitError)
    async def virtkit_error(request: Request, exc: VirtkitError) -> JSONResponse:
        if exc.expected:
            log.info("%s %s: %s (%s)", request.method, request.url.path, exc, exc.code)
        else:
            log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
        detail = {"hint": exc.hint} if exc.hint else None
        response = error_response(exc.http_status, exc.code, exc.message, detail)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:  # Throttled: when to try again
            response.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, detail = _validation_message(exc)
        return error_response(422, "invalid_input", message, detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(exc.detail) if exc.detail else code.replace("_", " ")
        response = error_response(exc.status_code, code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error(
            "%s %s failed unexpectedly (incident %s)",
            request.method,
            request.url.path,
            incident,
            exc_info=exc,
        )
        return error_response(
            500,
            "internal_error",
            f"virtkit failed unexpectedly; the service log has the details (incident {incident})",
        )
