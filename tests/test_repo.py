"""The project's own promises: CI runs the README's test command; the torch pin stays exact."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO_ROOT


def readme_commands() -> list[str]:
    """The commands in the README's quickstart block, in order."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no ```bash block under '## Quickstart'"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quickstart_is_exactly_two_commands_and_ci_runs_the_second():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "dvc repro" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (REPO_ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()


def test_torch_is_pinned_exactly():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert pins == ["torch==2.13.0"]
    unpinned = [d for d in project["dependencies"] + project["optional-dependencies"]["test"] if "==" not in d]
    assert unpinned == []
