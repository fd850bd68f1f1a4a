"""One error type for everything a client can be told went wrong, with a code each dialect maps to its wire.

The core raises `AssistantError` for a request it cannot serve (bad input, a missing engine, a limit,
an unknown id). The native dialect sends it as an `error` event; HTTP dialects map the code to a status.
"""

from __future__ import annotations

from typing import Literal, get_args

ErrorCode = Literal[
    "bad_request", "unauthorized", "too_large", "unsupported", "unavailable", "not_found", "rate_limited", "internal"
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)


def error_code(code: str) -> ErrorCode:
    """`code` when it is one of ERROR_CODES, else `internal` (engines may report any string)."""
    return code if code in ERROR_CODES else "internal"  # type: ignore[return-value]


class AssistantError(Exception):
    """A request that cannot be served: `code` says what kind of problem, `ref` names the client event it answers."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.ref = ref

    def about(self, ref: str | None) -> AssistantError:
        """The same error answering event `ref` (when it named none yet)."""
        if self.ref is None:
            self.ref = ref
        return self
