"""Client-sent histories (the stateless HTTP wires) become the engine's messages with the same checks as turns."""

from __future__ import annotations

import pytest

from assistant.engines import ToolCall
from assistant.errors import AssistantError
from assistant.stateless import StatelessMessage, stateless_context
from assistant.turns import ImageIn, TextIn
from tests import images
from tests.fakes import ColourEncoder, ColourNamer, FakeEnginesPlugin, ScriptedDialogue

RED = images.solid("red")


async def test_images_reach_a_text_model_as_descriptions_and_tool_messages_pass_through(make_conversation):
    """A user image becomes its `[Image 1: ...]` line; assistant tool calls and tool results keep their fields."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(), encoder=ColourEncoder(), modalities={"colour": ColourNamer()}))
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    history = [
        StatelessMessage("system", [TextIn("Be brief.")]),
        StatelessMessage("user", [ImageIn(RED, "image/png"), TextIn("What colour?")]),
        StatelessMessage("assistant", [], tool_calls=(call,)),
        StatelessMessage("tool", [TextIn("sunny")], tool_call_id="call_1", name="get_weather"),
    ]
    app = conversation.app
    async with stateless_context(app, history) as messages:
        assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
        assert messages[1].content == "[Image 1: mostly red, 48x40]\nWhat colour?" and messages[1].images == ()
        assert messages[2].tool_calls == (call,) and (messages[3].tool_call_id, messages[3].name, messages[3].content) == ("call_1", "get_weather", "sunny")
        assert app.media.used > 0  # the decoded image is held while the request runs
    assert app.media.used == 0


async def test_an_engine_that_sees_images_gets_the_pixels(make_conversation):
    """For a vision engine the image itself is in the message, with no description in the text."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(accepts_images=True)))
    async with stateless_context(conversation.app, [StatelessMessage("user", [ImageIn(RED), TextIn("colour?")])]) as messages:
        assert messages[0].content == "colour?" and messages[0].images[0].size == (48, 40)


async def test_a_bad_image_names_the_message_and_part(make_conversation):
    """An image that is not one is a bad_request naming `messages.N.content.M`, and holds no media budget."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(accepts_images=True)))
    history = [StatelessMessage("user", [TextIn("hi")]), StatelessMessage("user", [TextIn("look"), ImageIn(b"not an image")])]
    with pytest.raises(AssistantError) as refused:
        async with stateless_context(conversation.app, history):
            pass
    assert refused.value.code == "bad_request" and refused.value.message.startswith("messages.1.content.1:")
    assert conversation.app.media.used == 0
