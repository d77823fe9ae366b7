"""Typed errors for list entries and artefacts.

Every refusal carries a machine-readable ``reason`` (stable, used by the CLI and API) and a
message that names the problem for a person.
"""


class InvalidEntry(ValueError):
    """An entry (domain or URL) that cannot be listed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ArtefactError(ValueError):
    """A snapshot, delta or notification that is malformed, oversized or inconsistent."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
