"""The example modality package under examples/: installed with pip, found through its entry point, heard in the prompt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests import images
from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """examples/image-metadata installed by pip (from its own pyproject.toml) into a folder of its own."""
    source = tmp_path_factory.mktemp("src") / "image-metadata"
    shutil.copytree(REPO / "examples" / "image-metadata", source)  # the build leaves files beside the sources
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, timeout=300,
    )
    assert list(target.glob("selfhosted_assistant_image_metadata-*.dist-info/entry_points.txt"))
    return target


async def test_the_installed_package_adds_its_modality(installed, monkeypatch, start_server, connect_client, tmp_path, engine):
    """With the package on the path, its entry point registers `image_metadata` and its text reaches the prompt."""
    monkeypatch.syspath_prepend(str(installed))
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    registered = {m.name: m.plugin for m in server.app.registrations.modalities}
    assert registered == {"image_metadata": "image_metadata"} and [m.name for m in server.app.modalities] == ["image_metadata"]
    async with connect_client(server) as client:
        await client.start()
        await client.say_parts([images.image_part(images.exif_rotated_jpeg((60, 20)), "image/jpeg"), {"type": "text", "text": "Where was I?"}])
    assert engine.requests[-1].messages[-1].content == (
        "[Image 1: a 20x60 JPEG image, taken with TestCam Model 1 on 2024-05-01 at 10:00]\nWhere was I?"
    )


async def test_without_the_package_there_is_no_such_modality(start_server, tmp_path, engine):
    """The modality comes from the installed package alone: off the path, it is not there."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    assert "image_metadata" not in {m.name for m in server.app.registrations.modalities}


async def test_its_settings_are_validated_and_used(installed, monkeypatch, start_server, connect_client, tmp_path, engine):
    """`[plugins.image_metadata]` goes through the package's settings model: `camera = false` is heeded, a typo stops startup."""
    from assistant.app import App
    from assistant.config import ConfigError

    monkeypatch.syspath_prepend(str(installed))
    with pytest.raises(ConfigError, match=r"^invalid configuration: plugins.image_metadata.camra: Extra inputs are not permitted$"):
        App.prepare(make_config(tmp_path, plugins={"image_metadata": {"camra": False}}))
    server = await start_server(make_config(tmp_path, plugins={"image_metadata": {"camera": False}}), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        await client.start()
        await client.say_parts([images.image_part(images.exif_rotated_jpeg((60, 20)), "image/jpeg"), {"type": "text", "text": "When?"}])
    assert engine.requests[-1].messages[-1].content == "[Image 1: a 20x60 JPEG image, taken on 2024-05-01 at 10:00]\nWhen?"


def test_handing_in_the_installed_plugin_again_keeps_its_entry_point_name(installed, monkeypatch, tmp_path):
    """The docs' recipe `App.prepare(config, [module])` works when the module's entry point already loaded it (no 'already registered')."""
    from assistant.app import App

    monkeypatch.syspath_prepend(str(installed))
    import assistant_image_metadata

    app = App.prepare(make_config(tmp_path, plugins={"image_metadata": {"camera": False}}), [assistant_image_metadata])
    assert app.pm.get_name(assistant_image_metadata) == "image_metadata"
    assert app.plugin_settings("image_metadata").camera is False


def test_the_packages_own_tests_pass_with_the_installed_kit(installed):
    """examples/image-metadata/tests (the conformance suite and a real server, through assistant.testing) pass against the installed package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), *sys.path]), "HF_HUB_OFFLINE": "1"}  # this run's path: the same assistant
    fixtures = [] if any(ep.value == "assistant.testing.fixtures" for ep in entry_points(group="pytest11")) else ["-p", "assistant.testing.fixtures"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *fixtures, "tests"],
        cwd=REPO / "examples" / "image-metadata", env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
