"""Route metadata in one place: each operation's method, path, summary, who may call it, its
request body and query parameters.

The `RouteTable.route` decorator registers a handler once; the aiohttp router, the
authorisation middleware and the OpenAPI document all read the same `Operation`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from blocklist.authority.roles import PERMISSIONS, describe

Handler = Callable[..., Awaitable[web.StreamResponse]]
# Parses a request body into the operation's model; supplied by the API module.
BodyParser = Callable[[web.Request, "Operation"], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    # The permission an officer needs (roles.PERMISSIONS), or None when no officer may call.
    permission: str | None
    asp: bool  # ASP tokens may call
    public: bool  # no token needed
    body: type[BaseModel] | None
    query: tuple[str, ...]
    large_body: bool  # the batch import: a larger body limit
    handler: Handler

    @property
    def who(self) -> str:
        if self.public:
            return "anyone"
        parts = [describe(self.permission)] if self.permission else []
        if self.asp:
            parts.append("ASP")
        return ", ".join(parts)


class RouteTable:
    def __init__(self, parse_body: BodyParser) -> None:
        self._parse_body = parse_body
        self.operations: list[Operation] = []
        self._by_handler: dict[Handler, Operation] = {}

    def route(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        permission: str | None = None,
        asp: bool = False,
        public: bool = False,
        body: type[BaseModel] | None = None,
        query: Sequence[str] = (),
        large_body: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register a handler. With `body`, the handler gets the parsed model as 2nd argument."""
        if permission is not None and permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")
        if not (public or asp or permission):
            raise ValueError(f"{method} {path}: nobody may call it")

        def register(func: Handler) -> Handler:
            if body is None:
                handler = func
            else:

                async def handler(request: web.Request) -> web.StreamResponse:
                    return await func(request, await self._parse_body(request, op))

                handler.__name__ = func.__name__
            op = Operation(
                method.upper(),
                path,
                summary,
                permission,
                asp,
                public,
                body,
                tuple(query),
                large_body,
                handler,
            )
            self.operations.append(op)
            self._by_handler[handler] = op
            return func

        return register

    def operation(self, request: web.Request) -> Operation | None:
        """The operation a request was routed to (None for unknown paths)."""
        route = request.match_info.route
        return self._by_handler.get(route.handler) if route is not None else None

    def add_to(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method, op.path, op.handler)
