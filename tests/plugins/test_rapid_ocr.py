"""OCR with the real PP-OCRv4 models in the rapidocr-onnxruntime wheel, alone and fused into SmolLM2's prompt."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from assistant.modalities import ImageInput
from assistant_plugins.rapid_ocr import OcrSettings, RapidOcr
from tests import images
from tests.conftest import make_config
from tests.fakes import SettingsApp, record_requests


def _App(table: dict | None = None) -> SettingsApp:
    return SettingsApp("rapid_ocr", OcrSettings(**(table or {})))


@pytest.fixture(scope="module")
def ocr() -> RapidOcr:
    modality = RapidOcr()
    assert modality.load(_App())
    return modality


def as_input(data: bytes) -> ImageInput:
    from assistant.image_input import decode_image

    decoded = decode_image(data, 10**8, 10**8)
    return ImageInput(1, decoded.sha256, decoded.mime, data, decoded.image)


@pytest.mark.parametrize("text", ["NO PARKING", "Closed on Sundays", "Welcome to Springfield", "EXIT ONLY"])
def test_ocr_reads_a_rendered_sign(ocr, text):
    """The text rendered on a sign comes back word for word."""
    assert ocr.describe(as_input(images.sign(text))) == f'text read in it: "{text}"'


def test_lines_come_in_reading_order(ocr):
    """Lines come back top first, words on one line left to right."""
    image = Image.new("RGB", (640, 320), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    draw.text((40, 190), "ORANGES", fill="black", font=font)
    draw.text((40, 60), "APPLES", fill="black", font=font)
    draw.text((360, 62), "PEARS", fill="black", font=font)
    assert ocr.read(image) == ["APPLES PEARS", "ORANGES"]


def test_an_image_without_text_says_nothing(ocr):
    """A plain colour holds no text: no description."""
    assert ocr.describe(as_input(images.solid("white", (200, 120)))) is None


def test_disabled_ocr_sits_out():
    """`enabled = false` keeps the modality from loading."""
    assert RapidOcr().load(_App({"enabled": False})) is False


@pytest.mark.offline_model
async def test_sign_question_with_smollm2_puts_the_ocr_text_in_the_prompt(start_server, connect_client, tmp_path):
    """Offline defaults (SmolLM2, OCR and ImageNet labels): 'What does the sign say?' about a NO PARKING sign gives a prompt holding the OCR text, then the labels, on one line."""
    config = make_config(
        tmp_path, engines={"dialogue": "transformers"}, plugins={"deny": [], "transformers_dialogue": {"max_new_tokens": 40}}
    )
    server = await start_server(config)
    assert [m.name for m in server.app.modalities] == ["ocr", "labels"], "no image encoder: the zero-shot labels sit out"
    requests = record_requests(server.app.engines["dialogue"])
    async with connect_client(server) as client:
        await client.start()
        events = await client.say_parts([images.image_part(images.sign("NO PARKING")), {"type": "text", "text": "What does the sign say?"}])
    prompt = requests[-1].messages[-1].content
    assert prompt.startswith('[Image 1: text read in it: "NO PARKING"; ') and prompt.endswith("]\nWhat does the sign say?")
    assert prompt.count("[Image 1:") == 1
    print("\nSmolLM2 reply:", events[-1]["text"])
    assert events[-1]["status"] == "completed"
