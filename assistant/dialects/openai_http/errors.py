"""OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}` with the status OpenAI would send.

Every failure of an OpenAI route ends here: the core's `AssistantError` (mapped by its code), a request
that does not validate (pydantic's first error, its location as `param`), and this wire's own refusals.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from assistant.dialects.http import HTTP_STATUS
from assistant.errors import AssistantError, ErrorCode

ERROR_TYPES: dict[ErrorCode, tuple[str, str | None]] = {
    "bad_request": ("invalid_request_error", None),
    "unauthorized": ("invalid_request_error", "invalid_api_key"),
    "too_large": ("invalid_request_error", "request_too_large"),
    "unsupported": ("invalid_request_error", "unsupported_parameter"),
    "unavailable": ("server_error", "service_unavailable"),
    "not_found": ("invalid_request_error", "not_found"),
    "rate_limited": ("rate_limit_error", "rate_limit_exceeded"),
    "internal": ("server_error", None),
}
"""Each core error code as OpenAI's error `type` and `code`."""


class OpenAIError(Exception):
    """A request refused in OpenAI's terms: HTTP status, message, error type, the parameter at fault and a code."""

    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON envelope."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        return JSONResponse(self.body(), status_code=self.status)


def from_assistant_error(exc: AssistantError, param: str | None = None) -> OpenAIError:
    """The core's error in OpenAI's terms; a message that starts with a dotted location (`messages.1.content.0: ...`) names the param."""
    type_, code = ERROR_TYPES[exc.code]
    if param is None:
        head, colon, _ = exc.message.partition(": ")
        if colon and head and " " not in head and ("." in head or head.isidentifier()):
            param = head
    return OpenAIError(HTTP_STATUS[exc.code], exc.message, type_, param, code)


def from_validation_error(exc: ValidationError, data: Any = None, where: str = "") -> OpenAIError:
    """A request body that does not fit the request model: 400 naming the first field at fault (dotted, as `messages.0.content`)."""
    errors = exc.errors(include_url=False)
    # Of the errors a field's union members gave (a string, or a list of parts), the deepest says most (the last, on a tie).
    same_field = [error for error in errors if error["loc"][:1] == errors[0]["loc"][:1]]
    first = max(reversed(same_field), key=lambda error: len(error["loc"]))
    location = ".".join(str(part) for part in _in_data(first["loc"], data))
    param = f"{where}.{location}" if where and location else (location or where or None)
    message = f"{param}: {first['msg']}" if param else first["msg"]
    return OpenAIError(400, message, param=param, code="missing_required_parameter" if first["type"] == "missing" else "invalid_value")


def _in_data(loc: tuple[int | str, ...], data: Any) -> list[int | str]:
    """The parts of a pydantic error location that index the request's data.

    pydantic also puts the member of a union it tried into locations (`user` for a message's role, `str`,
    `list[...]`, `function-after[...]`); OpenAI's params have none, so those that index nothing are left
    out. A field missing from an object, the last part, is kept.
    """
    kept: list[int | str] = []
    current = data
    for index, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif index < len(loc) - 1 or not isinstance(current, dict):
            continue  # a union member's name, or a field a non-object lacks
        kept.append(part)
    return kept


def not_found_model(name: str) -> OpenAIError:
    """The 404 OpenAI answers for a model it does not have."""
    return OpenAIError(404, f"The model `{name}` does not exist (GET /v1/models lists the models this server has)", param="model", code="model_not_found")
