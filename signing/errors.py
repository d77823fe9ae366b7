"""Typed errors for keys, envelopes, certificates and freshness checks.

Every refusal carries a machine-readable ``reason`` (stable: callers, the CLI, metrics and alarms
switch on it) and a message for a person that names what failed (key id, time, serial, path...).
Nothing in this package lets a parsing error of another type (IndexError, struct.error,
ValueError...) escape on bad input: callers catch ``SigningError`` and nothing else.
"""

from __future__ import annotations

from typing import ClassVar


class SigningError(Exception):
    """Base class: something could not be signed, loaded or verified."""

    REASONS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, reason: str, message: str) -> None:
        # Both go into args so the error survives pickling (resolver worker processes).
        super().__init__(reason, message)
        assert reason in self.REASONS, f"{type(self).__name__}: unknown reason {reason!r}"
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


class KeyFileError(SigningError):
    """A key file or a public key text that cannot be used."""

    REASONS = frozenset(
        {"insecure_permissions", "bad_key_file", "missing", "exists", "bad_public_key"}
    )


class EnvelopeError(SigningError):
    """Bytes that are not a well-formed envelope or bundle (checked before any signature)."""

    REASONS = frozenset({"truncated", "oversized", "bad_magic", "wrong_type", "length_mismatch"})


class SignatureError(SigningError):
    """The signature does not verify, or the signer is not among the keys we trust."""

    REASONS = frozenset({"bad_signature", "unknown_key"})


class CertificateError(SigningError):
    """A key certificate that is outside its window, misplaced in the chain, or malformed."""

    REASONS = frozenset(
        {
            "not_yet_valid",
            "expired",
            "wrong_role",
            "bad_certificate",
            "uncertified_key",
            "revoked",
            "superseded",
        }
    )


class FreshnessError(SigningError):
    """A signed notification past its expiry: keep the last verified state and raise an alarm."""

    REASONS = frozenset({"expired"})


class RollbackError(SigningError):
    """A version (serial) older than the one already applied: a replay or a rollback attack."""

    REASONS = frozenset({"rollback"})
