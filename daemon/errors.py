"""One exception root for ingestd, with the two branches that matter.

* ``PermanentError``: the data (or the event) is at fault. Retrying cannot help;
  the event goes to the dead-letter queue with a stable ``reason`` code.
* ``TransientError``: something around the data is down (database, broker,
  a timeout). The work is retried with backoff and never dead-lettered.

Every reason code of DESIGN.md is declared once, here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Exit status of every command: done, failed (or needs attention), bad usage or
# configuration (and start-up errors that retrying cannot cure).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

REASONS = {
    "unknown_source": "the file's folder is not a configured source",
    "path_rejected": "the path escapes the landing zone or is a symlink out of it",
    "unreadable_file": "the file cannot be read (missing, permissions, not a regular file)",
    "encoding_error": "the bytes are not valid in the expected text encoding",
    "parse_error": "the file is not valid for its format",
    "schema_rejected": "too many records fail the source's JSON Schema",
    "load_error": "the database refused the data",
    "bad_event": "the message is not a valid ingestd event",
    "too_large": "the input exceeds a configured size limit",
    "api_error": "an API call failed or returned an unexpected shape",
    "delivery_limit": "the broker gave up redelivering the message",
}


class IngestError(Exception):
    """Root of every error ingestd raises on purpose."""


class ConfigError(IngestError):
    """The configuration is missing or invalid (exit status 2)."""


@dataclass
class Failure:
    """The error envelope used in dead letters, runs and logs."""

    reason: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "detail": self.detail}


class PermanentError(IngestError):
    """The data is at fault: dead-letter the event with ``reason``."""

    def __init__(self, reason: str, message: str, **detail: Any) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.failure = Failure(reason, message, detail)

    @property
    def reason(self) -> str:
        return self.failure.reason


class TransientError(IngestError):
    """Something the data does not control failed: retry with backoff."""


class NotPermittedError(TransientError):
    """A server answered and refused: wrong password, missing role or vhost,
    no permission. Retrying cannot help until someone changes something, so
    at start-up ingestd stops with exit status 2 and the ``fix``; once
    running, it keeps retrying like any outage (an operator may be rotating
    a password)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class StartupError(ConfigError):
    """ingestd cannot start, and retrying cannot change that (exit status 2,
    so that systemd does not restart it in a loop)."""


class Shutdown(BaseException):
    """Raised inside a role's loop to stop it.

    A ``BaseException`` so that ``except Exception`` in a work step cannot
    swallow a stop request.
    """
