"""Routes of one shape, ``POST .../{object}/{action}``: call the service's method for the named
object and answer with the object as it is now. VMs' power buttons, networks' and pools'
start and stop are all this, so it is written once."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from virtkit.api.context import ApiContext, context

Ctx = Annotated[ApiContext, Depends(context)]


def action_routes(
    router: APIRouter,
    *,
    path: str,
    ident: tuple[str, Any],
    caller: Any,
    service: Callable[[ApiContext], Any],
    read: str,
    model: type[BaseModel],
    kind: str,
    actions: Mapping[str, tuple[str, str]],
    responses: dict[int | str, dict[str, Any]],
) -> None:
    """For each ``action: (method, doc)``, ``POST {path}/{action}``: ``service(ctx).method(id)``
    then ``service(ctx).read(id)``. ``ident`` is the path parameter's name and its (validating)
    type, ``caller`` the permission dependency (``Annotated[Principal, Depends(require(...))]``).
    """
    param, ident_type = ident

    def make(method: str) -> Callable[..., Any]:
        def handler(**kwargs: Any) -> Any:
            target = service(kwargs["ctx"])
            getattr(target, method)(kwargs[param])
            return getattr(target, read)(kwargs[param])

        keyword = inspect.Parameter.KEYWORD_ONLY
        handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("ctx", keyword, annotation=Ctx),
                inspect.Parameter(param, keyword, annotation=ident_type),
                inspect.Parameter("who", keyword, annotation=caller),
            ],
            return_annotation=model,
        )
        return handler

    for action, (method, doc) in actions.items():
        handler = make(method)
        handler.__doc__ = doc
        handler.__name__ = f"{action}_{kind}"
        router.post(f"{path}/{action}", response_model=model, responses=responses)(handler)
