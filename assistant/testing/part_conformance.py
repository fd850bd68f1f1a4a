"""The conformance suite for a plugin's part type: what every `assistant.PartType` must do.

A plugin package runs it against its own part type with one import and one class::

    import pytest
    from assistant.testing.part_conformance import PartTypeConformance, Sample

    import my_plugin

    class TestMyPartConformance(PartTypeConformance):
        @pytest.fixture
        def plugin(self):
            return my_plugin                      # the module (or object) with the register_part_types hook

        @pytest.fixture
        def samples(self):
            return [Sample(data=b"...", mime="application/x-mine", expect="words it must say")]

What it checks: the hook registers one valid part type; each sample decodes into a `DecodedPart`
within the limits; `describe` gives text (mentioning `expect`) with working tools, with failing
tools (an ASR engine that raises, an image path that says nothing) and with none; bad bytes (empty,
garbage, each sample cut short, `bad_samples`) raise `PartError` and nothing else; a sample past
`limits.max_bytes` raises `PartError` with code `too_large`. It imports only the public API and
pytest, and runs `describe` with `asyncio.run`, so it needs no async test plugin.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pytest
from pydantic import BaseModel

from assistant import DecodedPart, EngineError, PartError, PartLimits, PartType, Transcript

T = TypeVar("T")

CORE_TYPES = ("text", "image", "audio")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,23}$")


@dataclass(frozen=True)
class Sample:
    """A valid part: its bytes, the mime a client would send (None: let the part type find out), its other
    wire fields, and text its description must contain (None: any text, or None, will do)."""

    data: bytes
    mime: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    expect: str | None = None


class WorkingTools:
    """Tools that work: every picture is `a test picture`, every sound `words from the test ASR`."""

    def __init__(self) -> None:
        self.images_seen = 0
        self.sounds_heard = 0

    async def describe_images(self, images: list[Any]) -> list[str | None]:
        self.images_seen += len(images)
        return ["a test picture" for _ in images]

    async def transcribe(self, samples: Any, language: str | None = None) -> Transcript | None:
        self.sounds_heard += 1
        return Transcript("words from the test ASR", "en", 1.0)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)


class FailingTools(WorkingTools):
    """Tools that fail: the image path says nothing, the ASR engine raises `EngineError`."""

    async def describe_images(self, images: list[Any]) -> list[str | None]:
        return [None for _ in images]

    async def transcribe(self, samples: Any, language: str | None = None) -> Transcript | None:
        raise EngineError("the test ASR engine failed")


class NoTools(WorkingTools):
    """What a server with neither an image path nor an ASR engine lends."""

    async def describe_images(self, images: list[Any]) -> list[str | None]:
        return [None for _ in images]

    async def transcribe(self, samples: Any, language: str | None = None) -> Transcript | None:
        return None


class PartTypeConformance:
    """Subclass as `Test...` and override the `plugin` and `samples` fixtures (and `bad_samples`, `limits`)."""

    @pytest.fixture
    def plugin(self) -> Any:
        """The plugin: a module or object with a `register_part_types(register)` hook. Override."""
        raise NotImplementedError("override the `plugin` fixture with your plugin module")

    @pytest.fixture
    def samples(self) -> list[Sample]:
        """At least one valid part of the type. Override."""
        raise NotImplementedError("override the `samples` fixture with valid parts of your type")

    @pytest.fixture
    def bad_samples(self) -> list[Sample]:
        """Parts that must be refused with `PartError` (besides the suite's own garbage). Override to add."""
        return []

    @pytest.fixture
    def registered(self, plugin: Any) -> list[tuple[PartType, type[BaseModel] | None]]:
        """What the plugin's hook registers: (part type, settings model) pairs."""
        found: list[tuple[PartType, type[BaseModel] | None]] = []

        def register(part_type: PartType, *, settings: type[BaseModel] | None = None) -> None:
            found.append((part_type, settings))

        plugin.register_part_types(register=register)
        return found

    @pytest.fixture
    def part_type(self, registered: list[tuple[PartType, type[BaseModel] | None]]) -> PartType:
        """The registered part type, loaded as the core loads it (settings validated from an empty table)."""
        part_type, settings = registered[0]

        class App:
            """The part of the app a part type's `load` may use: no engines, its validated settings."""

            engines: ClassVar[dict[str, Any]] = {}

            def plugin_settings(self, name: str) -> BaseModel:
                if settings is None:
                    raise LookupError(name)
                return settings.model_validate({})

        assert part_type.load(App()) in (True, False), "load(app) returns a bool"  # type: ignore[arg-type]  # settings and engines only
        return part_type

    @pytest.fixture
    def limits(self, part_type: PartType) -> Callable[[bytes], PartLimits]:
        """The limits the core would decode a part of these bytes within (default config)."""
        return lambda data: PartLimits(
            max_bytes=part_type.max_bytes, max_decoded_bytes=max(part_type.decode_cost(len(data)), len(data)),
            max_pixels=24_000_000, max_audio_seconds=120.0,
        )

    def _decode(self, part_type: PartType, sample: Sample, limits: PartLimits) -> DecodedPart:
        options = part_type.fields.model_validate(sample.fields) if part_type.fields is not None else None
        return part_type.decode(sample.data, sample.mime, options, limits)

    def test_registers_one_valid_part_type(self, registered: list[tuple[PartType, type[BaseModel] | None]]) -> None:
        """The hook registers a PartType with a valid, free name, a label, accepted mimes and a byte limit."""
        assert registered, "register_part_types registered nothing"
        for part_type, settings in registered:
            assert isinstance(part_type, PartType)
            assert isinstance(part_type.name, str) and NAME.match(part_type.name), f"name {part_type.name!r} must match {NAME.pattern}"
            assert part_type.name not in CORE_TYPES and not part_type.name.endswith("_text"), f"name {part_type.name!r} is taken"
            assert isinstance(part_type.label, str)
            assert part_type.mimes and all(isinstance(m, str) and "/" in m for m in part_type.mimes)
            assert isinstance(part_type.max_bytes, int) and part_type.max_bytes > 0
            assert part_type.fields is None or issubclass(part_type.fields, BaseModel)
            assert settings is None or issubclass(settings, BaseModel)
            assert isinstance(part_type.decode_cost(1000), int) and part_type.decode_cost(1000) >= 0

    def test_samples_decode_within_the_limits(self, part_type: PartType, samples: list[Sample], limits: Callable[[bytes], PartLimits]) -> None:
        """Each sample decodes into a DecodedPart that holds no more than the core took for it."""
        assert samples, "give at least one sample"
        for sample in samples:
            assert sample.mime is None or sample.mime in part_type.mimes, f"sample mime {sample.mime!r} is not in mimes"
            given = limits(sample.data)
            decoded = self._decode(part_type, sample, given)
            assert isinstance(decoded, DecodedPart), f"decode returned {type(decoded).__name__}"
            assert isinstance(decoded.nbytes, int) and 0 <= decoded.nbytes <= given.max_decoded_bytes
            assert decoded.text is None or isinstance(decoded.text, str)
            assert decoded.mime is None or decoded.mime in part_type.mimes

    @pytest.mark.parametrize("tools", [WorkingTools, FailingTools, NoTools], ids=["working-tools", "failing-tools", "no-tools"])
    def test_describe_gives_text(self, part_type: PartType, samples: list[Sample], limits: Callable[[bytes], PartLimits], tools: type) -> None:
        """describe returns text or None, whatever the tools do: a failing tool loses its share, not the part."""
        for sample in samples:
            decoded = self._decode(part_type, sample, limits(sample.data))
            text = asyncio.run(part_type.describe(decoded, tools()))
            assert text is None or isinstance(text, str), f"describe returned {type(text).__name__}"
            if sample.expect is not None:
                assert text is not None and sample.expect.lower() in text.lower(), f"{sample.expect!r} not in {text!r}"

    def test_garbage_is_a_part_error(
        self, part_type: PartType, samples: list[Sample], bad_samples: list[Sample], limits: Callable[[bytes], PartLimits],
    ) -> None:
        """Empty bytes, random bytes and `bad_samples` raise PartError (a client's mistake), never another exception."""
        noise = random.Random(0).randbytes(4096)
        mimes = {sample.mime for sample in samples}
        cases = [Sample(data, mime) for mime in mimes for data in (b"", noise, b"\x00" * 512)] + bad_samples
        for case in cases:
            with pytest.raises(PartError) as raised:
                self._decode(part_type, case, limits(case.data))
            assert raised.value.code in ("bad_request", "too_large", "unsupported")

    def test_truncated_samples_are_decoded_or_refused(self, part_type: PartType, samples: list[Sample], limits: Callable[[bytes], PartLimits]) -> None:
        """A sample cut short either still decodes into a DecodedPart or raises PartError: no other exception."""
        for sample in samples:
            for size in (len(sample.data) // 2, len(sample.data) // 10):
                cut = Sample(sample.data[:size], sample.mime, sample.fields)
                try:
                    decoded = self._decode(part_type, cut, limits(cut.data))
                except PartError:
                    continue
                assert isinstance(decoded, DecodedPart)

    def test_a_part_past_max_bytes_is_too_large(self, part_type: PartType, samples: list[Sample], limits: Callable[[bytes], PartLimits]) -> None:
        """decode honours `limits.max_bytes` itself: one byte less than the sample is `too_large`."""
        for sample in samples:
            given = limits(sample.data)
            small = PartLimits(len(sample.data) - 1, given.max_decoded_bytes, given.max_pixels, given.max_audio_seconds)
            with pytest.raises(PartError) as raised:
                self._decode(part_type, sample, small)
            assert raised.value.code == "too_large"
