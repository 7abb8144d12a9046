"""The long-horizon forecasting table of a forecaster task: every cell it trains, at every horizon
of the standard table, beside the published rows and the naive floor.

    python -m pipeline.experiments.ltsf etth1                      # the sweep, then reports/ltsf/etth1.md
    python -m pipeline.experiments.ltsf mycsv --horizons 24 48      # any forecaster task, any horizons
    python -m pipeline.experiments.ltsf etth1 --report-only        # the table again, from what MLflow holds

The horizon is a sweep dimension of the normal stages, not four copies of a task: one grid of
DVC experiments (`dvc exp run --queue -S task.<t>.prepare.horizon=96,192,336,720` with the
task's validate stages as targets, then `dvc exp run --run-all`, which runs the queue and waits).
Each experiment re-runs prepare, train, export and validate for its horizon in a temporary copy
of the repository, records its params, metrics and dvc.lock as a DVC experiment (`dvc exp show`),
and logs to the task's MLflow experiment like any other run. The default `dvc repro` keeps its
stages and its time. DVC experiments rather than more stages: a horizon is one setting of the
same stages, and `dvc exp show` / `dvc exp apply` are how a user compares and keeps one.

The table is then read back from MLflow: per cell and horizon, the newest finished run of the
task whose params hold that horizon and the task's lookback and that the validate stage checked.
Its ONNX record (the run's `onnx/<run>.json` artifact, as metrics/onnx/ holds it) says whether
every gate passed; each is written beside the table (reports/ltsf/<task>/<task>-<model>-h<H>.json). Published rows come from the task's anchors (conf/task/<t>.yaml) for each
horizon, so a task without published figures shows only its own rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.anchors import anchors_of
from pipeline.config import ConfigError, load_task, setup_logging
from pipeline.files import write_json_atomic, write_text_atomic
from pipeline.markdown import has_block, number, replace_block, table

log = logging.getLogger(__name__)

HORIZONS = (96, 192, 336, 720)   # the standard long-horizon table
METRICS = ("test/mse", "test/mae")
VALIDATION = "best/val/mse"   # what picks the cell per horizon, as the champion is picked
REPORTS = Path("reports/ltsf")   # <task>.md, and <task>/ the gates of each cell: one table per task
DOCS_PAGE = Path("docs/ltsf.md")   # a task's block there (`<!-- ltsf:<task>:start -->`) is the same table


def sweep_command(task_name: str, horizons, targets: list[str]) -> list[str]:
    """One DVC grid over the horizons, each point the task's validate stages and what they need."""
    values = ",".join(str(h) for h in horizons)
    return ["dvc", "exp", "run", "--queue", "-S", f"task.{task_name}.prepare.horizon={values}", *targets]


def run_sweep(task_name: str, horizons, targets: list[str]) -> float:
    """Queue the grid and run it (`--run-all` waits for the queue); returns the seconds it took."""
    start = time.perf_counter()
    for command in (sweep_command(task_name, horizons, targets), ["dvc", "exp", "run", "--run-all"]):
        log.info("ltsf: %s", " ".join(command))
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed with exit code {result.returncode}; "
                               "`dvc queue logs <name>` shows an experiment's output")
    return time.perf_counter() - start


# ---- the runs, from MLflow -------------------------------------------------------------------


def table_runs(client, experiment_id: str, models: list[str], horizons, lookback: int) -> dict:
    """{(model, horizon): the newest finished, validated run} of the task's MLflow experiment."""
    found = {}
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=5000):
        params, tags = run.data.params, run.data.tags
        if "onnx.cpu.status" not in tags or params.get("task.prepare.lookback") != str(lookback):
            continue
        key = (params.get("model.name"), int(params.get("task.prepare.horizon", -1)))
        if key[0] in models and key[1] in horizons:
            found.setdefault(key, run)
    return found


def onnx_record(client, run) -> dict:
    """The validate stage's record of the run (its artifact onnx/<task>-<model>.json)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client.download_artifacts(run.info.run_id, "onnx", tmp))
        records = sorted(folder.glob("*.json"))
        return json.loads(records[0].read_text()) if records else {}


# ---- the table --------------------------------------------------------------------------------


def pair(values: dict | None) -> str:
    return "–" if not values else f"{number(values.get('test/mse'), 3)} / {number(values.get('test/mae'), 3)}"


def average(cells: list[dict | None]) -> dict | None:
    """The mean MSE and MAE over the horizons, or None unless every horizon has both."""
    if not cells or any(c is None or any(m not in c for m in METRICS) for c in cells):
        return None
    return {m: sum(c[m] for c in cells) / len(cells) for m in METRICS}


def table_rows(results: dict, models: list[str], horizons, floors: dict, published: dict) -> list[list[str]]:
    """One row per cell, the floor, the published rows. Bold: the cell a user would deploy at that
    horizon, chosen as the champion is, on validation (`val`, lower is better), never on test."""
    best = {h: min((m for m in models if (m, h) in results and "val" in results[m, h]),
                   key=lambda m: results[m, h]["val"], default=None) for h in horizons}
    rows = []
    for model in models:
        cells = [results.get((model, h)) for h in horizons]
        rows.append([model.upper(), *(f"**{pair(c)}**" if best[h] == model else pair(c)
                                      for h, c in zip(horizons, cells)), pair(average(cells))])
    floor_cells = [floors.get(h) for h in horizons]
    rows.append(["*naive floor: repeat last value*", *map(pair, floor_cells), pair(average(floor_cells))])
    for name in dict.fromkeys(n for h in horizons for n in published.get(h, {})):
        cells = [published.get(h, {}).get(name) for h in horizons]
        rows.append([f"*{name}*", *map(pair, cells), pair(average(cells))])
    return rows


# What a run of the table trained with, from its MLflow params: the training settings that a
# user tunes, and the cell's section (model.<kind>.*; the cell itself is the row).
TRAINING_PARAMS = ("train.lr", "train.patience", "task.train.epochs", "task.train.batch_size")


def run_settings(params: dict) -> dict:
    return {k: v for k, v in params.items()
            if k in TRAINING_PARAMS or (k.startswith("model.") and k not in ("model.name", "model.cell"))}


def settings_text(runs: dict) -> str:
    """One sentence: the settings every run of the table shares, then any that differ, by run."""
    per_run = {key: run_settings(run.data.params) for key, run in runs.items()}
    keys = sorted(set().union(*per_run.values()))
    shared = [k for k in keys if len({settings.get(k) for settings in per_run.values()}) == 1]
    text = "Settings of every run above (their MLflow params): " + \
        ", ".join(f"`{k}={next(iter(per_run.values()))[k]}`" for k in shared) + "."
    for k in (k for k in keys if k not in shared):
        text += f" `{k}` differs: " + ", ".join(f"{m.upper()} H={h} {v.get(k, '–')}" for (m, h), v in per_run.items()) + "."
    return text


def build_table(config, task_name: str, horizons, client) -> tuple[str, dict, dict]:
    """(markdown, {(model, horizon): run details}, {file stem: validation record}) from what MLflow
    holds for the task."""
    task = config.task[task_name]
    models = [run.model for run in config.runs.values() if run.task == task_name]
    experiment = client.get_experiment_by_name(config.tracking.experiment_prefix + task_name)
    found = {} if experiment is None else table_runs(client, experiment.experiment_id, models, horizons,
                                                    task.prepare.lookback)
    runs = dict(sorted(found.items(), key=lambda item: (models.index(item[0][0]), item[0][1])))   # table order
    results, floors, details, records = {}, {}, {}, {}
    for (model, horizon), run in runs.items():
        metrics, record = run.data.metrics, onnx_record(client, run)
        records[f"{task_name}-{model}-h{horizon}"] = record
        results[model, horizon] = {**{m: metrics[m] for m in METRICS if m in metrics},
                                   **({"val": metrics[VALIDATION]} if VALIDATION in metrics else {})}
        floors.setdefault(horizon, {m: metrics.get(m.replace("test/", "baseline/")) for m in METRICS})
        cpu = record.get("cpu", {})
        details[model, horizon] = {
            "run_id": run.info.run_id, "experiment": run.data.tags.get("dvc.exp_name", "–"),
            "train_s": metrics.get("train/seconds"), "epochs": metrics.get("epochs"),
            "gates_passed": record.get("passed"), "b1": cpu.get("speedup_vs_torch_b1"),
            "b64": cpu.get("speedup_vs_torch_b64")}
    published = {h: {n: v for g in anchors_of(task, horizon=h) for n, v in g.figures.items()} for h in horizons}
    header = ["cell (MSE / MAE)", *(f"H={h}" for h in horizons), "average"]
    lines = [table(header, table_rows(results, models, horizons, floors, published))]
    missing = [f"{m.upper()} H={h}" for m in models for h in horizons if (m, h) not in results]
    if missing:
        lines.append(f"\nNot in MLflow yet: {', '.join(missing)}.")
    detail_rows = [[f"{m.upper()} H={h}", d["experiment"], d["run_id"][:8],
                    "–" if d["train_s"] is None else f"{d['train_s']:.1f}",
                    str(int(d["epochs"])) if d["epochs"] is not None else "–",
                    {True: "passed", False: "**failed**", None: "–"}[d["gates_passed"]],
                    "–" if d["b1"] is None else f"{d['b1']:.2f}x / {d['b64']:.2f}x"]
                   for (m, h), d in details.items()]
    lines += ["", table(["run", "DVC experiment", "MLflow run", "train s", "epochs",
                                  "ONNX gates (metrics/onnx record)", "ORT CPU speed-up b1 / b64"], detail_rows)]
    if runs:
        lines += ["", settings_text(runs)]
    return "\n".join(lines), details, records


def report_text(task_name: str, task, tables: str, seconds: float | None) -> str:
    """reports/ltsf/<task>.md: what ran, under which protocol, and the table."""
    prepare = task.prepare
    protocol = (f"features {prepare.features}, lookback L={prepare.lookback}, "
                + (f"borders {prepare.borders}" if prepare.borders else f"ratios {prepare.ratios}")
                + ", train-only z-scores, every test window counted (stride 1, none dropped)")
    timing = "" if seconds is None else f" The sweep took {seconds:.0f} s on this machine."
    return "\n".join([
        f"# {task_name}: the long-horizon table",
        "",
        f"Generated by `python -m pipeline.experiments.ltsf {task_name}` from the task's MLflow runs (never typed): "
        f"{protocol}. MSE / MAE on the normalised scale. Bold: the cell chosen per horizon on validation "
        "(best val/mse, as the champion is), never on test; each model's epoch was chosen on val/mse too, "
        "and its settings are listed under the tables. Published rows "
        "(italics) come from the task's anchors for each horizon." + timing,
        "",
        tables,
        ""])


def fill_docs_block(path: Path, task_name: str, body: str) -> bool:
    """The task's generated block of the docs page (`ltsf:<task>`), when the page has one; whether it had."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if not has_block(text, f"ltsf:{task_name}"):
        return False
    write_text_atomic(path, replace_block(text, f"ltsf:{task_name}", body, path))
    return True


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m pipeline.experiments.ltsf", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="a forecaster task of params.yaml, e.g. etth1")
    parser.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS),
                        help="the horizons of the table (default: 96 192 336 720)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table from MLflow")
    parser.add_argument("--out", type=Path, help=f"where the table goes (default {REPORTS}/<task>.md)")
    args = parser.parse_args(argv)
    try:
        config, task = load_task(args.task)
        if not hasattr(task.prepare, "horizon"):
            raise ConfigError(f"task.{args.task}: a {task.head} task has no prepare.horizon to sweep; "
                              "the long-horizon table is for forecaster tasks")
        if not config.tracking.enabled:
            raise ConfigError("tracking.enabled is false: the table is read from the MLflow runs")
        if any(h <= 0 for h in args.horizons):
            raise ConfigError(f"--horizons: every horizon must be at least 1, found {args.horizons}")
    except ConfigError as exc:
        print(f"ltsf: {exc}", file=sys.stderr)
        return 2
    targets = [f"validate@{name}" for name, run in config.runs.items() if run.task == args.task]
    seconds = None
    if not args.report_only:
        try:
            seconds = run_sweep(args.task, args.horizons, targets)
        except RuntimeError as exc:
            print(f"ltsf: {exc}", file=sys.stderr)
            return 1
    from mlflow import MlflowClient

    from pipeline.tracking import resolve_uri

    out = args.out or REPORTS / f"{args.task}.md"
    tables, details, records = build_table(config, args.task, args.horizons, MlflowClient(resolve_uri(config.tracking)))
    write_text_atomic(out, report_text(args.task, task, tables, seconds))
    for stem, record in records.items():   # the gates of every model of the table, beside it
        write_json_atomic(out.parent / out.stem / f"{stem}.json", record)
    fill_docs_block(DOCS_PAGE, args.task, tables)
    failed = [f"{m}@H={h}" for (m, h), d in details.items() if d["gates_passed"] is not True]
    log.info("ltsf: %s (%d runs%s)", out, len(details), f"; gates not passed: {failed}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
