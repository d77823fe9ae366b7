"""Refusals the command shows as `error: <message>`, with the exit status to use."""

from __future__ import annotations

from collections.abc import Sequence


class CliError(Exception):
    """A refusal to show as `error: <message>` (plus optional hint lines); exit with `code`."""

    def __init__(self, message: str, code: int = 1, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.hints = list(hints)


class ApiError(CliError):
    """The API answered with an error status; `data` is its JSON body."""

    def __init__(self, status: int, data: dict, hints: Sequence[str] = ()) -> None:
        message = str(data.get("message") or data.get("error") or f"HTTP {status}")
        super().__init__(message, 1, hints)
        self.status = status
        self.data = data
