"""`assistant plugins new NAME --role ROLE`: write a working plugin package to start from.

The package has a pyproject.toml (depending on the `selfhosted-assistant` distribution, with an
entry point in the `selfhosted_assistant` group), one module with a small engine (or modality) of the
chosen role and its pydantic settings, and tests that run the role's conformance suite from
`assistant.testing`. The engine is deliberately simple (an echo, a tone, a colour) but keeps the whole
contract, so its tests pass as written; replace its insides with a real model.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROLES = ("dialogue", "asr", "image_encoder", "image_generator", "speech_synthesizer", "modality")
NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A {role} plugin for the selfhosted-assistant backend"
requires-python = ">=3.11"
dependencies = ["selfhosted-assistant"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-asyncio>=1.0"]

# The backend finds the plugin through this entry point once the package is installed;
# its name is the plugin's name (and its settings table, [plugins.{name}]).
[project.entry-points.selfhosted_assistant]
{name} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
'''

README = '''\
# {dist}

A {role} plugin for the selfhosted-assistant backend, made by `assistant plugins new {name} --role {role}`.

    pip install -e '.[test]'
    pytest                      # the {role} conformance suite from assistant.testing, and more
    assistant plugins           # lists `{name}`

{select}
Settings go in `[plugins.{name}]` of config.toml; the backend validates them with `{settings}` at startup.
See docs/plugins.md of the backend for the hooks, the engine contract and the testing kit.
'''

HEADER = '''\
"""{summary} A plugin for the selfhosted-assistant backend."""

from __future__ import annotations

{imports}
from pydantic import BaseModel, ConfigDict, Field

PLUGIN_NAME = "{name}"  # the entry-point name in pyproject.toml, hence the [plugins.{name}] table


class {settings}(BaseModel):
    """`[plugins.{name}]`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

'''

ENGINES = {
    "dialogue": (
        "A dialogue engine that answers with the user's words in reverse order.",
        "import threading\nfrom collections.abc import Callable\n\n"
        "from assistant import DialogueEngine, DialogueRequest, DialogueResult, EngineError, Usage, hookimpl",
        '''\
    max_words: int = Field(2000, ge=1, description="longest message it takes")


class {engine}(DialogueEngine):
    """Streams the last user message's words in reverse order, one word per delta."""

    def __init__(self, settings: {settings}) -> None:
        self.id = "{name}:reverse"
        self.settings = settings

    def generate(self, request: DialogueRequest, emit: Callable[[str], None], cancelled: threading.Event) -> DialogueResult:
        """Blocking, on a worker thread: emit each word, stop once `cancelled` is set."""
        words = request.messages[-1].content.split()
        if len(words) > self.settings.max_words:
            raise EngineError(f"{{len(words)}} words; at most {{self.settings.max_words}} fit", code="too_large")
        limit = request.options.max_new_tokens or len(words)
        sent: list[str] = []
        for word in reversed(words[-limit:] if limit < len(words) else words):
            if cancelled.is_set():
                return DialogueResult("".join(sent), Usage(len(words), len(sent)), "cancelled")
            piece = word if not sent else " " + word
            emit(piece)
            sent.append(piece)
        return DialogueResult("".join(sent), Usage(len(words), len(sent)), "length" if limit < len(words) else "stop")


@hookimpl
def register_engines(register):
    """Register the engine as `[engines] dialogue = "{name}"`."""
    register("dialogue", "{name}", lambda app, settings: {engine}(settings), settings={settings})
''',
    ),
    "asr": (
        "An ASR engine that says how long and how loud the clip was (replace with a real model).",
        "from typing import Any\n\nimport numpy as np\n\nfrom assistant import AsrEngine, Transcript, hookimpl",
        '''\
    language: str = Field("en", description="the language it reports")


class {engine}(AsrEngine):
    """'a loud sound' or '' (silence) for any 16 kHz clip."""

    def __init__(self, settings: {settings}) -> None:
        self.id = "{name}:loudness"
        self.settings = settings

    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """Blocking, on a worker thread."""
        samples = np.asarray(samples, dtype=np.float32)
        loud = samples.size > 0 and float(np.sqrt(np.mean(samples**2))) > 0.01
        return Transcript("a loud sound" if loud else "", language or self.settings.language, samples.size / 16000)


@hookimpl
def register_engines(register):
    """Register the engine as `[engines] asr = "{name}"`."""
    register("asr", "{name}", lambda app, settings: {engine}(settings), settings={settings})
''',
    ),
    "image_encoder": (
        "An image encoder whose vectors are mean colours (replace with CLIP-like weights).",
        "from typing import Any\n\nimport numpy as np\n\nfrom assistant import ImageEncoder, hookimpl",
        '''\
    bias: float = Field(1.0, gt=0, description="added to each channel so black is no zero vector")


COLOURS = {{"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}}


def _unit(vectors: Any) -> Any:
    vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, 3)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class {engine}(ImageEncoder):
    """Mean RGB of an image; a text naming a colour lands on its axis."""

    dim = 3

    def __init__(self, settings: {settings}) -> None:
        self.id = "{name}:mean-colour"
        self.settings = settings

    def encode_images(self, images: list[Any]) -> Any:
        """(n, 3) float32 unit rows."""
        return _unit([np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0) / 255 + self.settings.bias for image in images])

    def encode_texts(self, texts: list[str]) -> Any:
        """(n, 3) float32 unit rows."""
        return _unit([next((COLOURS[w] for w in text.lower().split() if w in COLOURS), (1.0, 1.0, 1.0)) for text in texts])


@hookimpl
def register_engines(register):
    """Register the engine as `[engines] image_encoder = "{name}"`."""
    register("image_encoder", "{name}", lambda app, settings: {engine}(settings), settings={settings})
''',
    ),
    "image_generator": (
        "An image generator that paints the prompt's colour, step by step (replace with a diffusion model).",
        "import hashlib\nimport io\nimport random\nimport threading\nfrom collections.abc import Callable\n\n"
        "from PIL import Image\n\n"
        "from assistant import EngineError, GeneratedImage, GenerationCancelled, ImageGenerator, ImageRequest, hookimpl",
        '''\
    default_steps: int = Field(4, ge=1)
    max_steps: int = Field(50, ge=1)
    max_side: int = Field(1024, ge=8)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class {engine}(ImageGenerator):
    """A one-colour picture whose colour comes from the prompt and the seed."""

    def __init__(self, settings: {settings}) -> None:
        self.id = "{name}:colour"
        self.settings = settings

    def prepare(self, prompt, negative_prompt=None, width=None, height=None, steps=None, guidance=None, seed=None) -> ImageRequest:
        """Fill defaults; name every value outside the limits (code bad_request)."""
        s = self.settings
        problems = [f"{{key}}={{value}} (1..{{top}})" for key, value, top in
                    (("width", width, s.max_side), ("height", height, s.max_side), ("steps", steps, s.max_steps))
                    if value is not None and not 1 <= value <= top]
        if problems:
            raise EngineError("out of range: " + ", ".join(problems), code="bad_request")
        return ImageRequest(prompt, negative_prompt, width or 64, height or 64, steps or s.default_steps, guidance or 0.0,
                            random.randrange(2**31) if seed is None else seed)

    def generate(self, request: ImageRequest, on_step: Callable[[int, int, bytes | None], None], cancelled: threading.Event) -> GeneratedImage:
        """Blocking, on a worker thread: a preview after each step; GenerationCancelled once `cancelled` is set."""
        digest = hashlib.sha256(f"{{request.prompt}}|{{request.seed}}".encode()).digest()
        colour = (digest[0], digest[1], digest[2])
        for step in range(1, request.steps + 1):
            if cancelled.is_set():
                raise GenerationCancelled()
            on_step(step, request.steps, None)
        png = _png(Image.new("RGB", (request.width, request.height), colour))
        return GeneratedImage(png, request.width, request.height, request.seed)


@hookimpl
def register_engines(register):
    """Register the engine as `[engines] image_generator = "{name}"`."""
    register("image_generator", "{name}", lambda app, settings: {engine}(settings), settings={settings})
''',
    ),
    "speech_synthesizer": (
        "A speech synthesizer that says each word as a short tone (replace with a real voice).",
        "import threading\nfrom collections.abc import Callable\n\nimport numpy as np\n\n"
        "from assistant import EngineError, SpeechSynthesizer, Voice, hookimpl",
        '''\
    word_ms: int = Field(120, ge=10, le=2000, description="length of each word's tone")


class {engine}(SpeechSynthesizer):
    """One tone per word: `low` (the default) or `high`, PCM16 at 16 kHz, a chunk per word."""

    def __init__(self, settings: {settings}) -> None:
        self.id = "{name}:tones"
        self.settings = settings

    def voices(self) -> list[Voice]:
        """The default first."""
        return [Voice("low", "en-US", 16000), Voice("high", "en-US", 16000)]

    def synthesize(self, text: str, voice: str | None, on_audio: Callable[[bytes], None], cancelled: threading.Event) -> None:
        """Blocking, on a worker thread; stops at the next word once `cancelled` is set."""
        names = [v.name for v in self.voices()]
        if voice is not None and voice not in names:
            raise EngineError(f"unknown voice {{voice!r}}; voices: {{', '.join(names)}}", code="bad_request")
        hz = 440 if voice == "high" else 220
        samples = int(16000 * self.settings.word_ms / 1000)
        tone = (8000 * np.sin(2 * np.pi * hz * np.arange(samples) / 16000)).astype("<i2").tobytes()
        for word in text.split():
            if cancelled.is_set():
                return
            if any(c.isalnum() for c in word):  # what it cannot say (emoji, symbols) is skipped
                on_audio(tone)


@hookimpl
def register_engines(register):
    """Register the engine as `[engines] speech_synthesizer = "{name}"`."""
    register("speech_synthesizer", "{name}", lambda app, settings: {engine}(settings), settings={settings})
''',
    ),
    "modality": (
        "A modality that tells a text-only dialogue model how big and how bright each image is.",
        "from PIL import ImageStat\n\nfrom assistant import ImageInput, Modality, hookimpl",
        '''\
    brightness: bool = Field(True, description="mention whether the picture is dark or bright")


class {engine}(Modality):
    """`a 640x480 picture, mostly dark` for each image."""

    def __init__(self) -> None:
        self.settings = {settings}()

    def load(self, app) -> bool:
        """Take the validated [plugins.{name}] settings; nothing to load."""
        self.settings = app.plugin_settings(PLUGIN_NAME)
        return True

    def describe(self, image: ImageInput) -> str | None:
        """Blocking, on the modality's worker thread."""
        width, height = image.image.size
        text = f"a {{width}}x{{height}} picture"
        if self.settings.brightness:
            mean = ImageStat.Stat(image.image.convert("L")).mean[0]
            text += ", mostly dark" if mean < 85 else ", mostly bright" if mean > 170 else ""
        return text


@hookimpl
def register_modalities(register):
    """Register the modality under the plugin's name."""
    register("{name}", {engine}(), settings={settings})
''',
    ),
}

SUITES = {
    "dialogue": "DialogueEngineConformance", "asr": "AsrEngineConformance", "image_encoder": "ImageEncoderConformance",
    "image_generator": "ImageGeneratorConformance", "speech_synthesizer": "SpeechSynthesizerConformance", "modality": "ModalityConformance",
}

TESTS = '''\
"""{module}: the {role} conformance suite from assistant.testing, and the plugin inside a real server."""

from __future__ import annotations

import pytest

import {module}
from assistant.app import App
from assistant.testing.conformance import {suite}
from assistant.testing.server import server_config

PLUGIN = ({name!r}, {module})  # registered under its entry-point name, as when the package is installed


def prepared(folder, **tables) -> App:
    """An app with this plugin registered and its settings validated (no engine loaded yet)."""
    return App.prepare(server_config(folder, **tables), [PLUGIN])


class Test{engine}({suite}):
    @pytest.fixture(scope="class")
    @classmethod
    def {fixture}(cls, tmp_path_factory):
{build}


def test_a_misspelt_setting_stops_startup(tmp_path):
    """An unknown key in [plugins.{name}] is one `invalid configuration` line."""
    from assistant.config import ConfigError

    with pytest.raises(ConfigError, match="invalid configuration: plugins.{name}.no_such_key"):
        prepared(tmp_path, plugins={{{name!r}: {{"no_such_key": 1}}}})
{extra}'''

BUILD_ENGINE = '''\
        app = prepared(tmp_path_factory.mktemp("app"), engines={{{role!r}: {name!r}}})
        return app.build_engine({role!r}, {name!r})'''

BUILD_MODALITY = '''\
        app = prepared(tmp_path_factory.mktemp("app"))
        modality = next(entry.modality for entry in app.registrations.modalities if entry.name == {name!r})
        assert modality.load(app)
        return modality'''

SERVER_TEST = '''

@pytest.mark.asyncio
async def test_answers_over_the_websocket(assistant_server, assistant_client):
    """A real server on port 0 with this plugin: a turn is answered by the engine."""
    server = await assistant_server([PLUGIN], engines={{"dialogue": {name!r}}})
    async with assistant_client(server) as client:
        await client.start()
        done = (await client.say("one two three"))[-1]
    assert done["status"] == "completed" and done["text"] == "three two one"
'''


def write_plugin(name: str, role: str, parent: Path) -> Path:
    """Write the package for plugin `name` of `role` into a new folder under `parent`; returns the folder.

    ValueError for a bad name or role, or when the folder exists.
    """
    if not NAME.fullmatch(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and underscores, starting with a letter")
    if role not in ROLES:
        raise ValueError(f"--role {role!r}: one of {', '.join(ROLES)}")
    dist = "selfhosted-assistant-" + name.replace("_", "-")
    module = f"assistant_{name}"
    folder = parent / dist
    if folder.exists():
        raise ValueError(f"{folder} exists already: choose another name or folder")
    camel = "".join(part.title() for part in name.split("_"))
    engine = camel + ("Modality" if role == "modality" else "Engine")
    fields = {"name": name, "role": role, "dist": dist, "module": module, "engine": engine, "settings": camel + "Settings"}
    summary, imports, body = ENGINES[role]
    source = HEADER.format(summary=summary, imports=imports, **fields) + body.format(**fields)
    select = ("Select it in config.toml (the backend loads it when installed):\n" if role == "modality" else
              f"Select it in config.toml:\n\n    [engines]\n    {role} = \"{name}\"\n")
    build = (BUILD_MODALITY if role == "modality" else BUILD_ENGINE).format(**fields)
    tests = TESTS.format(suite=SUITES[role], fixture="modality" if role == "modality" else "engine", build=build,
                         extra=SERVER_TEST.format(**fields) if role == "dialogue" else "", **fields)
    (folder / "tests").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(**fields), encoding="utf-8")
    (folder / "README.md").write_text(README.format(select=select, **fields), encoding="utf-8")
    (folder / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    (folder / "tests" / f"test_{module}.py").write_text(tests, encoding="utf-8")
    return folder
