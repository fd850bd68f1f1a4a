"""Our engines as OpenAI models: `GET /v1/models` lists them, and each endpoint's `model` field names one.

A model id is an engine's id (`transformers:SmolLM2-135M-Instruct`, `faster-whisper:tiny.en`), or the
alias of its role: `dialogue`, `asr`, `speech_synthesizer`, `image_generator`, `image_encoder`.
An unknown name is OpenAI's 404 `model_not_found`; an engine of another role than the endpoint needs
is a 400 saying which one the endpoint serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from assistant.dialects.openai_http.errors import OpenAIError, not_found_model
from assistant.engines import ROLES, Engine

if TYPE_CHECKING:
    from assistant.app import App

ENDPOINTS = {
    "dialogue": "/v1/chat/completions",
    "asr": "/v1/audio/transcriptions",
    "speech_synthesizer": "/v1/audio/speech",
    "image_generator": "/v1/images/generations",
}
"""The endpoint each role's engine serves (the image encoder serves none of OpenAI's)."""


def model_entry(engine: Engine, role: str, created: int) -> dict[str, Any]:
    """One engine as an OpenAI model object, with its role and endpoint as extra fields."""
    return {"id": engine.id, "object": "model", "created": created, "owned_by": "assistant", "role": role, "endpoint": ENDPOINTS.get(role)}


def list_models(app: App, created: int) -> list[dict[str, Any]]:
    """Every configured engine, in role order."""
    return [model_entry(app.engines[role], role, created) for role in ROLES if role in app.engines]


def find_model(app: App, name: str) -> tuple[str, Engine] | None:
    """(role, engine) named by an engine id or a role alias, or None."""
    for role in ROLES:
        engine = app.engines.get(role)
        if engine is not None and name in (engine.id, role):
            return role, engine
    return None


def resolve_model(app: App, name: str | None, role: str) -> Engine:
    """The engine of `role` that `name` names (None: the role's engine); OpenAIError when there is none or it has another role."""
    if name is None:
        engine = app.engines.get(role)
        if engine is None:
            raise OpenAIError(503, f"this server has no {role} engine ([engines] {role})", "server_error", "model", "model_not_available")
        return engine
    found = find_model(app, name)
    if found is None:
        raise not_found_model(name)
    found_role, engine = found
    if found_role != role:
        wanted = app.engines.get(role)
        serves = f"it serves the {role} engine {wanted.id!r}" if wanted is not None else f"this server has no {role} engine"
        message = f"the model `{name}` is the {found_role} engine, not one this endpoint uses; {serves}"
        raise OpenAIError(400, message, param="model", code="model_not_supported")
    return engine
