"""The part-type conformance suite itself: a well-behaved part type passes it and each kind of misbehaviour fails it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

PLUGIN = '''
import pytest
from assistant import DecodedPart, EngineError, PartError, PartType, hookimpl
from assistant.testing.part_conformance import PartTypeConformance, Sample

FLAW = {flaw!r}


class Shout(PartType):
    name = "shout"
    mimes = ("text/plain",)

    def decode(self, data, mime, options, limits):
        if len(data) > limits.max_bytes and FLAW != "ignores_max_bytes":
            raise PartError("too big", "too_large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if FLAW == "raises_value_error":
                raise ValueError("boom") from None
            raise PartError("not UTF-8") from None
        if not text.strip() or "\\x00" in text:
            raise PartError("empty")
        return DecodedPart(value=text, text=text.upper(), nbytes=len(data) * (1000 if FLAW == "holds_too_much" else 1))

    async def describe(self, part, tools):
        if FLAW == "lets_tool_errors_through":
            await tools.transcribe(None)
        return part.text


@hookimpl
def register_part_types(register):
    register(Shout())


class TestShout(PartTypeConformance):
    @pytest.fixture
    def plugin(self):
        import sys
        return sys.modules[__name__]

    @pytest.fixture
    def samples(self):
        return [Sample(b"hello there", "text/plain", expect="HELLO")]
'''


def run_suite(tmp_path, flaw: str | None) -> dict[str, str]:
    """Each suite test's outcome (PASSED/FAILED) on the `Shout` part type with `flaw`."""
    (tmp_path / "test_shout.py").write_text(textwrap.dedent(PLUGIN.format(flaw=flaw)))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-o", "addopts=", "test_shout.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    outcomes = {}
    for line in result.stdout.splitlines():
        if "::TestShout::" in line and (" PASSED" in line or " FAILED" in line):
            test = line.split("::TestShout::")[1].split(" ")[0]
            outcomes[test] = "PASSED" if " PASSED" in line else "FAILED"
    assert outcomes, result.stdout + result.stderr
    return outcomes


def test_a_well_behaved_part_type_passes_every_check(tmp_path):
    """With no flaw every test of the suite passes (and there are tests for registration, decoding, describe and limits)."""
    outcomes = run_suite(tmp_path, None)
    assert set(outcomes.values()) == {"PASSED"} and len(outcomes) >= 8


def test_each_flaw_fails_the_check_about_it(tmp_path):
    """An exception other than PartError, an ignored byte limit, too much memory, a tool error let through: each is caught."""
    expected = {
        "raises_value_error": "test_garbage_is_a_part_error",
        "ignores_max_bytes": "test_a_part_past_max_bytes_is_too_large",
        "holds_too_much": "test_samples_decode_within_the_limits",
        "lets_tool_errors_through": "test_describe_gives_text[failing-tools]",
    }
    for flaw, test in expected.items():
        outcomes = run_suite(tmp_path, flaw)
        assert outcomes[test] == "FAILED", (flaw, outcomes)
        assert outcomes["test_registers_one_valid_part_type"] == "PASSED"
