"""Refusals of the authority's domain, and the one table that maps them to HTTP statuses.

The store, lifecycle and complaints raise these with a stable machine `code` and a sentence for
people; only the API turns them into statuses, through `http_status`.
"""

from __future__ import annotations


class AuthorityError(Exception):
    """A refused request: `code` names the refusal, the message explains it."""

    def __init__(self, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra

    def to_dict(self) -> dict:
        return {"error": self.code, "message": str(self), **self.extra}


class Malformed(AuthorityError):
    """The request itself cannot be read (JSON, query parameters)."""


class Unauthorized(AuthorityError):
    """No valid credential."""


class Forbidden(AuthorityError):
    """The caller may not do this: role, four-eyes rule, conflict of interest."""


class NotFound(AuthorityError):
    """No such entry, batch, officer, complaint, edition or file."""


class Conflict(AuthorityError):
    """The thing exists already, or is in a state that does not allow this."""


class Invalid(AuthorityError):
    """A field's value is refused (entry, country, name, date, text length)."""


class TooLarge(AuthorityError):
    """A request body beyond its limit."""


HTTP_STATUS: dict[type[AuthorityError], int] = {
    Malformed: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Invalid: 422,
}


def http_status(exc: AuthorityError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 400
