"""The diffusers image plugin on a tiny random Stable Diffusion pipeline."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from assistant import EngineError, GenerationCancelled
from assistant.app import App
from assistant.config import ConfigError
from assistant_plugins.diffusers_image import DiffusersImageGenerator, ImageSettings
from tests.conftest import make_config


@pytest.fixture(scope="module")
def engine(tiny_sd) -> DiffusersImageGenerator:
    return DiffusersImageGenerator(tiny_sd, ImageSettings(model=str(tiny_sd), default_steps=4, max_steps=50))


def test_loads_through_the_app_by_path_and_paints_a_64px_png(tiny_sd, tmp_path):
    """Configured by path, the engine paints a 64x64 PNG at the pipeline's native size, reporting every step."""
    config = make_config(tmp_path, engines={"image_generator": "diffusers"},
                         plugins={"diffusers_image": {"model": str(tiny_sd), "default_steps": 3}})
    engine = App.prepare(config).build_engine("image_generator", "diffusers")
    request = engine.prepare("a red bicycle", seed=7)
    assert (request.width, request.height, request.steps, request.seed) == (64, 64, 3, 7)
    steps: list[tuple[int, int]] = []
    image = engine.generate(request, lambda step, total, preview: steps.append((step, total)), threading.Event())
    assert steps == [(1, 3), (2, 3), (3, 3)]
    decoded = Image.open(io.BytesIO(image.png))
    assert decoded.format == "PNG" and decoded.size == (64, 64) and image.seed == 7


def test_same_prompt_seed_and_steps_give_identical_bytes(engine):
    """Determinism: the same request twice gives the same PNG bytes; another seed gives another image."""
    request = engine.prepare("a red bicycle", steps=2, seed=42)
    first = engine.generate(request, lambda *a: None, threading.Event()).png
    second = engine.generate(request, lambda *a: None, threading.Event()).png
    other = engine.generate(engine.prepare("a red bicycle", steps=2, seed=43), lambda *a: None, threading.Event()).png
    assert first == second and first != other


def test_cancel_after_the_first_step_stops_the_job(engine):
    """A cancel set during step 1 stops before step 2 with GenerationCancelled."""
    cancelled = threading.Event()
    steps: list[int] = []

    def on_step(step, total, preview):
        steps.append(step)
        cancelled.set()

    with pytest.raises(GenerationCancelled):
        engine.generate(engine.prepare("x", steps=10, seed=1), on_step, cancelled)
    assert steps == [1]
    already = threading.Event()
    already.set()
    with pytest.raises(GenerationCancelled):
        engine.generate(engine.prepare("x", steps=10, seed=1), lambda *a: None, already)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"prompt": "x", "steps": 0}, "steps must be between 1 and 50"),
        ({"prompt": "x", "steps": 51}, "steps must be between 1 and 50"),
        ({"prompt": "x", "width": 60}, "width must be a multiple of 8"),
        ({"prompt": "x", "height": 10000}, "height must be a multiple of 8 between 8 and 2048"),
        ({"prompt": "x", "width": 2048, "height": 2048}, "pixels"),
        ({"prompt": "   "}, "prompt must not be empty"),
        ({"prompt": "x" * 3000}, "at most 2000"),
        ({"prompt": "x", "guidance": -1}, "guidance"),
        ({"prompt": "x", "seed": -5}, "seed"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(engine, params, needle):
    """Each out-of-range parameter raises EngineError(bad_request) naming it."""
    with pytest.raises(EngineError) as err:
        engine.prepare(**params)
    assert err.value.code == "bad_request" and needle in str(err.value)


def test_previews_come_every_n_steps_from_the_cheap_decoder(tiny_sd, tiny_taesd):
    """With a preview decoder and preview_every=2, steps 2 and 4 of 5 carry a small PNG preview."""
    engine = DiffusersImageGenerator(tiny_sd, ImageSettings(model=str(tiny_sd), preview_every=2, preview_max_side=32), tiny_taesd)
    previews: dict[int, bytes | None] = {}
    engine.generate(engine.prepare("x", steps=5, seed=1), lambda s, t, p: previews.__setitem__(s, p), threading.Event())
    assert [s for s, p in previews.items() if p] == [2, 4]
    preview = Image.open(io.BytesIO(previews[2]))
    assert preview.format == "PNG" and max(preview.size) <= 32


def pixels(png: bytes):
    import numpy as np

    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32)


def test_concurrent_jobs_share_weights_and_match_sequential_results(engine):
    """A short job started while a long one paints leaves both images as they are alone.

    The jobs differ in step count, so a scheduler shared between them would rewrite the long job's
    timesteps mid-run (measured: up to 135 levels of difference with one shared pipeline object).
    Pixels, not bytes: two jobs at once split the CPU threads differently, and multithreaded float
    sums are not bit-identical across thread splits.
    """
    requests = [engine.prepare("long", steps=40, seed=2), engine.prepare("short", steps=3, seed=1)]
    alone = [engine.generate(r, lambda *a: None, threading.Event()).png for r in requests]
    together: dict[int, bytes] = {}
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, engine.generate(requests[i], lambda *a: None, threading.Event()).png))
               for i in range(2)]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    for thread in threads:
        thread.join()
    for i in range(2):
        assert abs(pixels(together[i]) - pixels(alone[i])).max() <= 2.0


def test_settings_and_missing_model_are_reported_by_key(tmp_path):
    """Bad keys name plugins.diffusers_image.<key>; selecting the engine without a model says what to set."""
    with pytest.raises(ConfigError, match="plugins.diffusers_image.max_steps"):
        App.prepare(make_config(tmp_path, plugins={"diffusers_image": {"max_steps": 0}}))
    with pytest.raises(ConfigError, match=r"default_steps \(200\) is above max_steps \(100\)"):
        App.prepare(make_config(tmp_path, plugins={"diffusers_image": {"default_steps": 200}}))
    config = make_config(tmp_path, engines={"image_generator": "diffusers"})
    with pytest.raises(ConfigError, match=r"\[plugins.diffusers_image\] model is not set"):
        App.prepare(config).build_engine("image_generator", "diffusers")


def test_compile_switch_wraps_the_denoiser(tiny_sd):
    """compile = true hands the UNet to torch.compile (compilation itself happens on first use)."""
    engine = DiffusersImageGenerator(tiny_sd, ImageSettings(model=str(tiny_sd), compile=True))
    assert type(engine.pipeline.unet).__name__ == "OptimizedModule"
