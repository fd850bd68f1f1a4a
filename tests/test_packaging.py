"""Packaging: the distribution `selfhosted-assistant` is what a plugin's dependency installs, in a fresh virtual environment.

`assistant` on the package index is an unrelated project; a plugin declares
`dependencies = ["selfhosted-assistant"]` and the entry-point group `selfhosted_assistant`.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the fresh environment sees only what is installed in it
PROJECT_FILES = ("assistant", "plugins", "assistant_plugins", "pyproject.toml", "README.md", "LICENSE")


def wheel(source: Path, into: Path) -> Path:
    """`pip wheel --no-deps` of a project folder (copied first: a build leaves files beside the sources)."""
    copy = into.parent / f"src-{source.name}"
    copy.mkdir()
    for name in PROJECT_FILES if source == REPO else [p.name for p in source.iterdir()]:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, copy / name, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        elif path.exists():
            shutil.copy(path, copy / name)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(into), str(copy)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    warnings = re.findall(r"\w+Warning: .*", run.stdout + run.stderr)
    assert not warnings, f"building {source.name} prints setuptools warnings: {warnings}"
    return into


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> tuple[Path, Path]:
    """A new virtual environment (its python) and a folder holding wheels of this project and of examples/image-metadata."""
    root = tmp_path_factory.mktemp("packaging")
    wheels = root / "wheels"
    wheel(REPO, wheels)
    wheel(REPO / "examples" / "image-metadata", wheels)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python", wheels


def test_the_example_plugins_dependency_installs_this_project(fresh_venv):
    """Installing the example plugin from local wheels alone, its declared dependency `selfhosted-assistant` resolves to this project's wheel."""
    python, wheels = fresh_venv
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels), "--no-deps"]
    subprocess.run([*pip, "selfhosted-assistant-image-metadata"], check=True, timeout=120)
    requires = subprocess.run([str(python), "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('selfhosted-assistant-image-metadata')))"],
                              check=True, capture_output=True, text=True, env=CLEAN_ENV).stdout.split("\n")
    ours = [r for r in requires if r.split(">")[0].split("=")[0].split("<")[0].strip() == "selfhosted-assistant"]
    assert ours, f"the example does not depend on selfhosted-assistant: {requires}"
    subprocess.run([*pip, ours[0]], check=True, timeout=120)  # the requirement exactly as the plugin declares it
    # The heavy dependencies (torch, transformers...) come from this test run's environment, after ours on the path.
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    (venv_site / "zz_dev_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    probe = textwrap.dedent("""
        import importlib.metadata as m, json, pathlib
        import assistant
        from assistant.app import App
        from assistant.config import Config
        from assistant.plugins import describe_plugins
        from assistant.schema import head_revision
        dist = m.distribution("selfhosted-assistant")
        app = App.prepare(Config.from_dict({"plugins": {"deny": ["rapid_ocr", "imagenet_labels", "clip_image"]}}))
        print(json.dumps({
            "module": assistant.__file__,
            "files": sorted(str(f) for f in dist.files),
            "groups": {g: sorted(ep.name for ep in dist.entry_points if ep.group == g) for g in ("selfhosted_assistant", "pytest11", "console_scripts")},
            "plugins": {info.name: info.version for info in describe_plugins(app.pm, app.registrations)},
            "schema_head": head_revision(),
        }))
    """)
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, cwd=wheels, env=CLEAN_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["module"].startswith(str(venv_site)), "assistant was not imported from the fresh environment"
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "assistant").rglob("*.py") if "__pycache__" not in p.parts}
    assert packages <= {str(Path(f).parent) for f in found["files"]}, "pyproject's package list misses a package of assistant/"
    assert {"assistant/web/static/index.html", "assistant/testing/conformance.py", "assistant_plugins/keyword_router.py"} <= set(found["files"])
    assert {"assistant/migrations/env.py", "assistant/migrations/script.py.mako", "assistant/migrations/versions/0001_initial.py"} <= set(found["files"])
    assert found["schema_head"] == sorted(p.stem.split("_")[0] for p in (REPO / "assistant" / "migrations" / "versions").glob("0*.py"))[-1]
    assert found["groups"]["pytest11"] == ["selfhosted_assistant"] and found["groups"]["console_scripts"] == ["assistant"]
    assert "keyword_router" in found["groups"]["selfhosted_assistant"]
    assert found["plugins"]["image_metadata"] == "0.1.0"
