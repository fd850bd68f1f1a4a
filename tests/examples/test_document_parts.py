"""The document example package under examples/: installed with pip, its PDFs' text reaches the model and the stored turn."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import make_config
from tests.examples.installing import install_example, load_helper, run_package_tests
from tests.fakes import FakeEnginesPlugin


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, source copy) of examples/document-parts installed by pip."""
    return install_example("document-parts", "assistant_document_parts", tmp_path_factory)


@pytest.fixture(scope="module")
def make_pdf(installed):
    """The package's own PDF maker (real text objects, so the text is extractable)."""
    return load_helper(installed[1], "pdf_samples").make_pdf


def document(data: bytes, mime: str = "application/pdf", **fields) -> dict:
    """A `document` part as a client sends it."""
    return {"type": "document", "data": base64.b64encode(data).decode(), "mime": mime, **fields}


def test_the_package_passes_its_own_tests_and_the_conformance_suite(installed):
    """The package's tests, the backend's part-type conformance suite among them, pass against the installed package."""
    result = run_package_tests(*installed)
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("registers_one_valid_part_type", "samples_decode_within_the_limits", "garbage_is_a_part_error", "a_part_past_max_bytes_is_too_large"):
        assert f"TestDocumentConformance::test_{check} PASSED" in result.stdout


async def test_a_pdfs_text_reaches_the_model_and_the_stored_turn(installed, make_pdf, monkeypatch, start_server, connect_client, tmp_path, engine):
    """With the package on the path its entry point adds `document`: the PDF's text is in the context and in history."""
    monkeypatch.syspath_prepend(str(installed[0]))
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    assert {p.name: p.plugin for p in server.app.registrations.part_types} == {"document": "document_parts"}
    pdf = make_pdf(["The treasure is buried under the old oak tree.", "Dig at noon."])
    async with connect_client(server) as client:
        await client.start()
        events = await client.say_parts([document(pdf, name="map.pdf"), {"type": "text", "text": "Where is it?"}])
        assert events[-1]["status"] == "completed"
        await client.send({"type": "conversation.get"})
        turn = (await client.recv_until("conversation.history"))[-1]["turns"][0]
    said = "[Document 1: map.pdf, PDF, 2 pages: The treasure is buried under the old oak tree.\nDig at noon.]"
    assert engine.requests[-1].messages[-1].content == f"{said}\nWhere is it?"
    assert [p["type"] for p in turn["content"]] == ["document", "text", "document_text"]
    assert turn["content"][0]["mime"] == "application/pdf" and turn["content"][2]["text"] == said[len("[Document 1: ") : -1]
    assert await server.app.store.attachment(turn["content"][0]["sha256"]) == ("application/pdf", pdf)


async def test_its_limits_come_from_its_settings(installed, make_pdf, monkeypatch, start_server, connect_client, tmp_path, engine):
    """`[plugins.document_parts] max_pages` refuses a longer PDF as too_large over the wire, and a typo stops startup."""
    from assistant.app import App
    from assistant.config import ConfigError

    monkeypatch.syspath_prepend(str(installed[0]))
    with pytest.raises(ConfigError, match=r"^invalid configuration: plugins\.document_parts\.max_page: Extra inputs are not permitted$"):
        App.prepare(make_config(tmp_path, plugins={"document_parts": {"max_page": 1}}))
    config = make_config(tmp_path, plugins={"document_parts": {"max_pages": 1}})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [document(make_pdf(["one", "two"]))]})
        error = await client.recv()
        assert (error["code"], error["message"]) == ("too_large", "content.0: the PDF has 2 pages; at most 1 are read")
        await client.send({"type": "turn.create", "content": [document(b"%PDF-1.4 not really")]})
        error = await client.recv()
        assert error["code"] == "bad_request" and error["message"].startswith("content.0: not a readable PDF")
