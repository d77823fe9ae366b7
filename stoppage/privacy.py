"""No visitor data in any log: an allow-list on what the stop page process writes.

Cordon's own loggers ("cordon.*") never put a client address, host, path, query or header value
into a record. Libraries do: aiohttp's server logger quotes the raw request of a malformed,
over-long or duplicated-header request together with the peer address, and asyncio's exception
handler prints transports with their peer. So every record from any other logger keeps only its
logger name, level and exception type; its message, arguments, traceback and stack are dropped
before any handler formats them. Python warnings and "exception ignored" reports are routed
through the same filter.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

OWN_PREFIX = "cordon"
WITHHELD = "message withheld: it may quote a request"


class VisitorDataFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == OWN_PREFIX or record.name.startswith(OWN_PREFIX + "."):
            return True
        kind = ""
        if record.exc_info and record.exc_info[0] is not None:
            kind = f" ({record.exc_info[0].__name__})"
        record.msg = f"{WITHHELD}{kind}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        if hasattr(record, "fields"):
            record.fields = None
        return True


def _unraisable(unraisable: Any) -> None:
    kind = type(unraisable.exc_value).__name__ if unraisable.exc_value is not None else "?"
    logging.getLogger("cordon.stoppage").warning(
        "exception ignored", extra={"fields": {"exception_type": kind}}
    )


def install() -> None:
    """Filter every handler of the root logger (call after logging is set up)."""
    logging.captureWarnings(True)
    keep = VisitorDataFilter()
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, VisitorDataFilter) for f in handler.filters):
            handler.addFilter(keep)
    # Records that reach no handler go to logging.lastResort: filter it as well.
    if logging.lastResort is not None:
        logging.lastResort.addFilter(keep)
    sys.unraisablehook = _unraisable
