"""A conversation as the code of one turn sees it: the app, the conversation, where its events go.

`assistant.conversation.Conversation` extends it with the client's turn queue and requests; the
turn code (`turns`, `reply`, `image_jobs`) needs only this much, so it never depends on the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from assistant import events
from assistant.errors import AssistantError
from assistant.types import Emit, SpeechOut, Tell

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.speech import Speaker


class ConversationScope:
    """One client's view of one conversation: publish its events, tell the client alone about errors."""

    def __init__(self, app: App, conversation_id: str, principal: str, emit: Emit, tell: Tell) -> None:
        self.app = app
        self.id = conversation_id
        self.principal = principal
        self.emit = emit
        self._tell = tell
        self.jobs: set[Any] = set()  # this client's image jobs (image_jobs.ImageJob), queued or painting
        self.speech: SpeechOut | None = None  # set when the client asked for spoken replies
        self.speakers: dict[str, Speaker] = {}  # the speech of this client's latest spoken replies, by response id
        self.speaker: Speaker | None = None  # the latest
        self.timezone: ZoneInfo | None = None  # the user's, when the client said it (tools read it through ToolContext)

    async def publish(self, event: events.Event, seq: int | None = None) -> None:
        """Publish a conversation event (numbered next, or with its reserved `seq`) to every follower."""
        error = getattr(event, "error", None)
        if isinstance(error, events.ErrorInfo):
            self.app.metrics.errors.labels(error.code).inc()
        await self.emit(event, seq)

    async def tell(self, error: AssistantError) -> None:
        """Tell this client alone that one of its requests failed."""
        self.app.metrics.errors.labels(error.code).inc()
        await self._tell(events.Error(code=error.code, message=error.message, ref=error.ref))
