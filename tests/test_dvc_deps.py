"""dvc.yaml keeps DVC's contract: each stage depends on the code it runs, writes where
pipeline/layout.py says, and a task added in conf/ gets all its stages."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.training.checkpoints import paths_of
from pipeline.config import load_config
from pipeline.data import SETTINGS as DATA_SETTINGS
from pipeline.kinds import SETTINGS as HEAD_SETTINGS
from tests.conftest import REPO_ROOT, committed_files, compose_params, copy_repo, make_mirror, run_in
from tests.imports import LOOKUPS, import_closure, lookup_closure


def resolved_stages(root: Path) -> list:
    """The stages of root/dvc.yaml as DVC resolves them (foreach expanded)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return list(repo.index.stages)


def stage_module(cmd: str) -> str | None:
    match = re.match(r"python -m ([\w.]+)", cmd)
    return match.group(1) if match else None


def looked_up(config, stage_name: str) -> dict[str, set[str]]:
    """The kinds a stage looks up by name: its run's head and data kind (train, export, validate
    @<run>), its task's (fetch, prepare @<task>), or every run's (a stage of the whole pipeline)."""
    key = stage_name.partition("@")[2]
    if key in config.runs:
        run = config.runs[key]
        return {"head": {run.head}, "data": {run.data}}
    if key in config.task:
        return {"head": {config.task[key].head}, "data": {config.task[key].data}}
    return {"head": {r.head for r in config.runs.values()}, "data": {r.data for r in config.runs.values()}}


def code_files(root: Path, dep: str) -> list[Path]:
    """The code a dep names: a module, or every module of a package folder (a data kind's)."""
    if dep.endswith(".py"):
        return [Path(dep)]
    if dep.startswith("pipeline/") and (root / dep).is_dir():
        return sorted(p.relative_to(root) for p in (root / dep).rglob("*.py"))
    return []


def stage_closures(root: Path) -> dict[str, tuple[set[Path], list[Path]]]:
    """{stage: (the files its command runs from this repository, its declared code deps)}."""
    config = load_config(root / "params.yaml")
    found = {}
    for stage in resolved_stages(root):
        module = stage_module(stage.cmd)
        assert module, f"{stage.name}: expected `python -m <module> ...`, found {stage.cmd!r}"
        code = [path for dep in stage.deps for path in code_files(root, dep.def_path)]
        found[stage.name] = (lookup_closure(root, module, looked_up(config, stage.name)), code)
    return found


def missing_code_deps(root: Path) -> dict[str, list[str]]:
    """{stage: files its command imports (from this repository) that its deps do not cover}."""
    missing = {}
    for name, (closure, declared) in stage_closures(root).items():
        uncovered = [str(path) for path in sorted(closure) if path not in declared]
        if uncovered:
            missing[name] = uncovered
    return missing


def own_modules(root: Path) -> set[Path]:
    """The files that one name's lookup alone brings in: a kind's or a data kind's own modules
    and its network (dvc.yaml names them per run, `${item.head}`, `${item.data}`)."""
    names = {"head": set(HEAD_SETTINGS), "data": set(DATA_SETTINGS)}
    own = set()
    for field, template in LOOKUPS.values():
        closures = [import_closure(root, template.format(name)) for name in sorted(names[field])]
        own |= {path for path in set().union(*closures) if sum(path in c for c in closures) == 1}
    return own


def foreign_code_deps(root: Path) -> dict[str, list[str]]:
    """{stage: code in its deps that it never runs, where that is a kind's or a data kind's own
    module (an edit there would re-run the stage for nothing) or code no stage of its group runs}.
    A library that some runs of a group import and others not (flops.py: the batch kinds) is
    listed for the whole group: dvc.yaml can name per run only what is named after the run."""
    closures = stage_closures(root)
    own = own_modules(root)
    group_runs: dict[str, set[Path]] = {}
    for name, (closure, _) in closures.items():
        group_runs.setdefault(name.split("@")[0], set()).update(closure)
    foreign = {}
    for name, (closure, declared) in closures.items():
        unused = [str(p) for p in declared if p not in closure and (p in own or p not in group_runs[name.split("@")[0]])]
        if unused:
            foreign[name] = unused
    return foreign


def test_every_stage_depends_on_its_whole_local_import_closure():
    assert missing_code_deps(REPO_ROOT) == {}


def test_no_stage_depends_on_another_kinds_module():
    assert foreign_code_deps(REPO_ROOT) == {}


def test_the_closure_check_names_a_dependency_removed_from_dvc_yaml(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    dvc_yaml = repo / "dvc.yaml"
    text = dvc_yaml.read_text()
    validate = text.index("  validate:")
    dvc_yaml.write_text(text[:validate] + text[validate:].replace("        - pipeline/layout.py\n", "", 1))
    missing = missing_code_deps(repo)
    assert set(missing) == {f"validate@{name}" for name in load_config(repo / "params.yaml").runs}
    assert all(files == ["pipeline/layout.py"] for files in missing.values())


def test_stage_modules_import_library_modules_never_each_other():
    stages = {stage_module(stage.cmd) for stage in resolved_stages(REPO_ROOT)}
    for module in stages:
        own = Path(*module.split(".")).with_suffix(".py")
        others = {Path(*m.split(".")).with_suffix(".py") for m in stages} - {own}
        assert not import_closure(REPO_ROOT, module) & others, module


def test_the_benchmarks_import_library_modules_never_a_stage():
    stages = {Path(*stage_module(stage.cmd).split(".")).with_suffix(".py") for stage in resolved_stages(REPO_ROOT)}
    benchmarks = sorted(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
                        for path in (REPO_ROOT / "benchmarks").rglob("*.py"))
    assert "benchmarks.run" in benchmarks and "benchmarks.sections.train" in benchmarks
    for module in benchmarks:
        assert not import_closure(REPO_ROOT, module, ("pipeline", "benchmarks")) & stages, module


def test_the_default_pipeline_is_its_seven_stage_groups_with_no_sweep_among_them():
    """The long-horizon sweep runs as DVC experiments (pipeline/experiments/ltsf.py): `dvc repro` keeps its stages."""
    config = load_config(REPO_ROOT / "params.yaml")
    names = [stage.name for stage in resolved_stages(REPO_ROOT)]
    assert {name.split("@")[0] for name in names} == {"fetch", "prepare", "embed", "train", "export", "validate", "report"}
    assert len(names) == 2 * len(config.task) + 1 + 3 * len(config.runs) + 1 == 29


def test_stage_outputs_are_where_layout_says():
    config = load_config(REPO_ROOT / "params.yaml")
    outs = {stage.name: {o.def_path for o in stage.outs} for stage in resolved_stages(REPO_ROOT)}
    for name, run in config.runs.items():
        paths = paths_of(config, run.task, run.model)
        expected_train = {paths.model_dir, paths.train_metrics, paths.train_scores, paths.figures,
                          paths.curves_plot, paths.head_plot}
        assert outs[f"train@{name}"] == {str(p) for p in expected_train}
        assert outs[f"export@{name}"] == {str(paths.onnx_dir)}
        assert outs[f"validate@{name}"] == {str(paths.onnx_metrics), str(paths.onnx_scores)}


def test_dvc_metrics_are_the_headline_scores_only():
    declared = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    metrics = [next(iter(m)) if isinstance(m, dict) else m
               for stage in declared["stages"].values() for m in stage.get("do", stage).get("metrics", [])]
    assert metrics and all(m.startswith("${paths.scores}/") for m in metrics)


def test_a_csv_task_added_in_conf_gets_all_its_stages(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    mirror = make_mirror(tmp_path / "mirror")
    compose_params(repo, mirror, "+task@task.weather=etth1")
    listed = run_in(repo, "dvc", "stage", "list", "--name-only").stdout.split()
    for stage in ("fetch@weather", "prepare@weather", *(f"{s}@weather-{m}" for s in ("train", "export", "validate")
                                                        for m in ("lstm", "gru", "peephole"))):
        assert stage in listed, stage


def test_no_committed_file_holds_a_path_of_the_machine_that_wrote_it():
    # Folders that only exist on some machine (the assembled pattern does not match this file).
    machine_path = re.compile("(?<![\\w.$])/(?:" + "|".join(["wo" + "rk", "ho" + "me", "ro" + "ot", "Us" + "ers"])
                              + ")/[\\w.-]+")
    found = {}
    for name, content in committed_files().items():   # as committed: a local run may rewrite metrics/
        if Path(name).suffix in {".png", ".gz"}:
            continue
        hits = machine_path.findall(content.decode("utf-8", errors="replace"))
        if hits:
            found[name] = hits[:3]
    assert found == {}


def test_a_task_file_copied_from_another_writes_only_to_its_own_paths(tmp_path):
    """The user's first step: copy conf/task/imdb.yaml to a new name. Every output of the copy's
    stages is its own; none is IMDB's (paths derive from the task's name, not from the file)."""
    repo = copy_repo(tmp_path / "repo")
    mirror = make_mirror(tmp_path / "mirror")
    (repo / "conf/task/reviews.yaml").write_text((repo / "conf/task/imdb.yaml").read_text())
    compose_params(repo, mirror, "+task@task.reviews=reviews")
    outs = {stage.name: {o.def_path for o in stage.outs} for stage in resolved_stages(repo)}
    own = {name: paths for name, paths in outs.items() if name.endswith("@reviews") or "@reviews-" in name}
    others = set().union(*(paths for name, paths in outs.items() if name not in own))
    assert len(own) == 2 + 1 + 3 * 2   # fetch, prepare, embed; train, export, validate of lstm and gru
    assert all(paths and not paths & others for paths in own.values()), own
    assert all("reviews" in path for paths in own.values() for path in paths)
