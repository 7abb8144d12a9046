"""The project's own promises: CI runs the README's test command; the torch pin stays exact; the
test run's order lets one worker build the shared tiny pipeline while the other works."""

from __future__ import annotations

import re
import tomllib
from types import SimpleNamespace

from tests.conftest import REPO_ROOT, pipeline_first_then_last


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
    extras = [d for group in project["optional-dependencies"].values() for d in group]
    # An extra may include another by the project's own name ("recurrent-baselines[docs]"):
    # that names no new distribution, and the other extra's pins are checked here too.
    own_extra = re.compile(re.escape(project["name"]) + r"\[[\w,-]+\]")
    unpinned = [d for d in project["dependencies"] + extras if "==" not in d and not own_extra.fullmatch(d)]
    assert unpinned == []


def dockerfile_pins() -> list[str]:
    """The requirements the Dockerfile's dependency layer installs ("name==version" arguments)."""
    text = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    installs = [line for line in text.splitlines() if line.strip().startswith("RUN pip install")
                and "-e ." not in line]
    assert len(installs) == 1, "expected one dependency layer (RUN pip install ...) in the Dockerfile"
    return re.findall(r'"([A-Za-z0-9_.\-]+==[^"]+)"', installs[0])


def test_dockerfile_installs_exactly_the_pyproject_pins():
    pins = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(dockerfile_pins()) == sorted(pins)


def test_docker_image_runs_the_pipeline_as_a_non_root_user_with_cuda_required():
    text = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM nvidia/cuda:13\.[0-9.]+-cudnn-runtime-", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "export=gpu" in text and "dvc repro" in text
    assert ".git" in (REPO_ROOT / ".dockerignore").read_text().split()


def test_the_first_pipeline_test_goes_first_and_the_other_pipeline_tests_last_in_their_order():
    def item(name, *fixtures):
        return SimpleNamespace(name=name, fixturenames=[*fixtures, "tmp_path"])

    items = [item("a"), item("p1", "pipeline_repo"), item("b"), item("p2", "pipeline_repo"), item("c"),
             item("p3", "pipeline_repo")]
    assert [i.name for i in pipeline_first_then_last(items)] == ["p1", "a", "b", "c", "p2", "p3"]
    none = [item("a"), item("b")]
    assert pipeline_first_then_last(none) == none
