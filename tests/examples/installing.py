"""Installing an example package under examples/ with pip into a folder of its own, and running its own tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.conftest import REPO


def install_example(name: str, module: str, tmp_path_factory) -> tuple[Path, Path]:
    """(site folder, source copy) of examples/<name> installed by pip from its own pyproject.toml, entry point and all."""
    source = tmp_path_factory.mktemp("src") / name
    shutil.copytree(REPO / "examples" / name, source)  # the build leaves files beside the sources
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, timeout=300,
    )
    assert list(target.glob(f"{module}-*.dist-info/entry_points.txt"))
    return target, source


def run_package_tests(target: Path, source: Path) -> subprocess.CompletedProcess[str]:
    """The package's own tests (its conformance suite included), run by pytest against the installed package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    (source / Path(next(iter(source.glob("assistant_*.py"))).name)).unlink()  # the installed module, not the copy, is tested
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"],
        cwd=source, env=env, capture_output=True, text=True, timeout=300,
    )


def load_helper(source: Path, name: str) -> ModuleType:
    """A test helper module of the package (e.g. its sample makers), loaded from its tests folder."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", source / "tests" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
