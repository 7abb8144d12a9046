"""report: the champion is chosen on validation only; the README's results match the metrics."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from pipeline.config import load_config
from pipeline.stages.report import (
    anchors_of,
    build_report,
    champion,
    missing_handoffs,
    peephole_finding,
    ranking,
    results_pages,
)
from tests.conftest import REPO_ROOT, committed_tree, copy_pipeline, run_in


def test_champion_is_chosen_on_validation_never_on_test():
    config = load_config(REPO_ROOT / "params.yaml")
    train = {"lstm": {"best/val/acc": 0.91, "test/acc": 0.95, "params/count": 10},
             "gru": {"best/val/acc": 0.92, "test/acc": 0.90, "params/count": 20}}
    assert champion(config.task["imdb"], train, 0.002) == "gru"
    train = {"lstm": {"best/val/mse": 0.60, "test/mse": 0.50, "params/count": 10},
             "gru": {"best/val/mse": 0.55, "test/mse": 0.70, "params/count": 20}}
    assert champion(config.task["etth1"], train, 0.002) == "gru"


# The committed ETTh1 run: the peephole LSTM's validation MSE 2.3e-6 below the LSTM's.
ETTH1 = {"lstm": {"best/val/mse": 0.6799460053443909, "test/mse": 0.37186214327812195, "params/count": 557408},
         "gru": {"best/val/mse": 0.6818371415138245, "test/mse": 0.37279102206230164, "params/count": 425824},
         "peephole": {"best/val/mse": 0.6799436807632446, "test/mse": 0.3718598186969757, "params/count": 558176}}


def test_models_within_the_tie_tolerance_tie_and_the_smaller_one_wins():
    etth1 = load_config(REPO_ROOT / "params.yaml").task["etth1"]
    assert ranking(etth1, ETTH1, 0.002) == ["lstm", "peephole", "gru"]   # a 2e-6 lead crowns nobody
    assert ranking(etth1, ETTH1, 0.0) == ["peephole", "lstm", "gru"]     # without the rule it would
    assert ranking(etth1, ETTH1, 0.01) == ["gru", "lstm", "peephole"]     # all three tie: the smallest
    # A tie is judged against the best: the GRU (0.28 % behind) is out at 0.2 %, and a lead larger
    # than the tolerance wins whatever the size.
    bigger = {**ETTH1, "gru": {**ETTH1["gru"], "best/val/mse": 0.60, "params/count": 10**7}}
    assert ranking(etth1, bigger, 0.002) == ["gru", "lstm", "peephole"]


def test_the_report_says_ties_for_a_difference_inside_the_tolerance_and_never_calls_it_a_win():
    config = load_config(REPO_ROOT / "params.yaml")
    assert config.report.tie_rtol == 0.002
    sentence = peephole_finding(config, config.task["etth1"], ETTH1)
    assert "ties with" in sentence and "beats" not in sentence and "report.tie_rtol" in sentence
    clear = {**ETTH1, "peephole": {**ETTH1["peephole"], "best/val/mse": 0.60}}
    assert "the peephole LSTM beats the plain LSTM" in peephole_finding(config, config.task["etth1"], clear)
    worse = {**ETTH1, "peephole": {**ETTH1["peephole"], "best/val/mse": 0.70}}
    assert "does not beat" in peephole_finding(config, config.task["etth1"], worse)


def results_blocks_problems(repo) -> list[str]:
    """The README's and docs/results.md's generated blocks against what `pipeline.stages.report
    --readme` makes of the metrics, all as committed in `repo` (its files, not a local run's)."""
    with contextlib.chdir(repo):   # the config's paths are relative to the repository
        config = load_config()
        markdown, champions, _ = build_report(config, Path("reports"))
        return [f"{path}: results differ from the committed metrics; run `python -m pipeline.stages.report --readme`"
                for path, text in results_pages(config, markdown, champions).items()
                if text != path.read_text(encoding="utf-8")]


def test_readme_and_docs_results_blocks_match_the_committed_metrics(tmp_path, monkeypatch):
    repo = committed_tree(tmp_path / "head")   # what HEAD holds: a local dvc repro rewrites metrics/, not HEAD
    monkeypatch.chdir(repo)
    assert results_blocks_problems(repo) == []
    config = load_config(repo / "params.yaml")
    markdown, champions, figures = build_report(config, tmp_path / "out")
    assert all(f.is_file() for f in figures) and set(champions) == set(config.task)
    for task in config.task.values():   # the committed runs use the anchors' protocols
        assert anchors_of(task) and all(f"*{name}*" in markdown for group in anchors_of(task) for name in group.figures)
    assert "Host: `" in (repo / "README.md").read_text(encoding="utf-8")


def test_the_results_check_reads_commits_not_the_working_tree(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    metrics = clone / "metrics/train/imdb-gru.json"
    changed = {**json.loads(metrics.read_text()), "test/acc": 0.8123}
    # A local run rewrote metrics/ (another host, another figure): the committed blocks still hold.
    metrics.write_text(json.dumps(changed))
    assert results_blocks_problems(committed_tree(tmp_path / "head", clone)) == []
    # The same change committed without regenerating the README: the check fails on both pages.
    subprocess.run([*git, "commit", "--quiet", "-am", "metrics without the README"], cwd=clone, check=True)
    problems = results_blocks_problems(committed_tree(tmp_path / "next", clone))
    assert len(problems) == 2 and "README.md" in problems[0] and "docs/results.md" in problems[1]


def test_report_stage_writes_the_summary_with_each_tasks_champion_and_the_figures(pipeline_repo):
    # Which version holds the alias, and that it is report's ranking, is tests/test_registry.py's.
    repo, *_ = pipeline_repo
    config = load_config(repo / "params.yaml")
    summary = (repo / "reports/summary.md").read_text()
    for task, settings in config.task.items():
        section = summary.split(f"## {task}")[1].split("\n## ")[0]
        models = [run.model for run in config.runs.values() if run.task == task]
        train = {m: json.loads((repo / f"metrics/train/{task}-{m}.json").read_text()) for m in models}
        assert f"**{champion(settings, train, config.report.tie_rtol).upper()}** (champion)" in section
        assert section.count("(champion)") == 1
    assert (repo / "reports/etth1-forecasts.png").is_file() and (repo / "reports/imdb-curves.png").is_file()


def test_a_repro_of_the_report_stage_keeps_the_long_horizon_table_beside_its_own_files(pipeline_repo, tmp_path):
    source, *_ = pipeline_repo
    repo = copy_pipeline(source, tmp_path / "repo")
    (repo / "reports/ltsf/etth1").mkdir(parents=True)
    (repo / "reports/ltsf/etth1.md").write_text("# the long-horizon table\n")
    (repo / "reports/ltsf/etth1/etth1-gru-h96.json").write_text('{"passed": true}')
    (repo / "reports/summary.md").unlink()
    run_in(repo, "dvc", "repro", "--force", "--single-item", "report")
    assert (repo / "reports/summary.md").is_file()                       # the stage wrote its own files
    assert (repo / "reports/ltsf/etth1.md").read_text() == "# the long-horizon table\n"   # and kept the rest
    assert (repo / "reports/ltsf/etth1/etth1-gru-h96.json").is_file()


def test_champions_are_not_promoted_while_a_train_stages_mlflow_handoff_is_missing(tmp_path, monkeypatch):
    config = load_config(REPO_ROOT / "params.yaml")
    monkeypatch.chdir(tmp_path)   # output paths are relative: nothing has been trained here
    every_run = {f"models/{name}/mlflow.json" for name in config.runs}
    assert set(missing_handoffs(config)) == every_run
    (tmp_path / "models/imdb-gru").mkdir(parents=True)
    (tmp_path / "models/imdb-gru/mlflow.json").write_text('{"run_id": "abc"}')
    assert set(missing_handoffs(config)) == every_run - {"models/imdb-gru/mlflow.json"}


def test_each_task_shows_only_its_own_anchors_and_only_under_their_protocol():
    from pipeline.config import validate
    from pipeline.compose import compose

    # A CSV task made from etth1.yaml for other data, one with no anchors, and ETTh1 at H=192.
    config = validate(compose(["+task@task.mycsv=etth1", "task.mycsv.source.checksum=sha256:" + "1" * 64,
                               "+task@task.bare=etth1", "task.bare.anchors=[]", "task.etth1.prepare.horizon=192"]))
    etth1, imdb = config.task["etth1"], config.task["imdb"]
    assert config.task["mycsv"].anchors and anchors_of(config.task["mycsv"]) == []   # ETTh1's figures, other data
    assert anchors_of(config.task["bare"]) == []
    assert {g.protocol["horizon"] for g in anchors_of(etth1)} == {192}   # each horizon its own figures
    assert anchors_of(etth1, horizon=100) == []                           # and none where nothing is published
    assert [list(g.figures) for g in anchors_of(imdb)] == [list(g.figures) for g in imdb.anchors]
    assert all("SegRNN" not in name for g in anchors_of(imdb) for name in g.figures)


def test_the_report_of_a_task_without_anchors_prints_none(tmp_path, monkeypatch):
    from pipeline.config import validate
    from pipeline.compose import compose
    from pipeline.stages.report import results_table

    task = validate(compose(["task.etth1.anchors=[]"])).task["etth1"]
    train = {"gru": {"test/mse": 0.4, "test/mae": 0.41, "best/val/mse": 0.7, "params/count": 10,
                     "train/seconds": 1.0, "train/samples_per_s": 5.0, "baseline/mse": 1.29, "baseline/mae": 0.71}}
    table = results_table(task, train, {}, "gru")
    assert "*naive floor: repeat last value*" in table and "SegRNN" not in table and "DLinear" not in table
    with_anchors = results_table(validate(compose([])).task["etth1"], train, {}, "gru")
    assert "*SegRNN (Lin et al. 2023)* | 0.368 | 0.395" in with_anchors
