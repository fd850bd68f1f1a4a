"""`assistant plugins new NAME --role ROLE` writes a plugin package whose own tests (the role's conformance suite) pass as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points

import pytest

from assistant.cli import main
from assistant.scaffold import ROLES


def test_every_role_gets_a_package_whose_tests_pass(tmp_path, capsys):
    """For each role the command writes pyproject (our distribution, our entry-point group), a module and tests; pytest passes them."""
    folders = []
    for role in ROLES:
        name = f"demo_{role}"
        assert main(["plugins", "new", name, "--role", role, "--dir", str(tmp_path)]) == 0
        folder = tmp_path / f"selfhosted-assistant-demo-{role.replace('_', '-')}"
        assert f"wrote {folder}" in capsys.readouterr().out
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        assert project["dependencies"] == ["selfhosted-assistant"]
        assert project["entry-points"]["selfhosted_assistant"] == {name: f"assistant_{name}"}
        folders.append(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, folders), *sys.path]), "HF_HUB_OFFLINE": "1"}
    kit = [] if any(ep.value == "assistant.testing.fixtures" for ep in entry_points(group="pytest11")) else ["-p", "assistant.testing.fixtures"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *kit, "-o", "asyncio_default_fixture_loop_scope=function",
         *(str(folder / "tests") for folder in folders)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) == 41 and "failed" not in run.stdout, run.stdout[-2000:]  # every suite's checks, one server test


def test_bad_names_roles_and_existing_folders_are_one_line(tmp_path, capsys):
    """A name that is no identifier, an unknown role and an existing folder each exit 2 with one line."""
    assert main(["plugins", "new", "Bad-Name", "--role", "dialogue", "--dir", str(tmp_path)]) == 2
    assert main(["plugins", "new", "fine", "--role", "dialogue", "--dir", str(tmp_path)]) == 0
    assert main(["plugins", "new", "fine", "--role", "dialogue", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "lower-case letters" in err[0] and "exists already" in err[1]
    with pytest.raises(SystemExit):
        main(["plugins", "new", "x", "--role", "painter"])
