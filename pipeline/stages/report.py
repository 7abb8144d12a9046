"""Stage `report`: LSTM, GRU and peephole LSTM per task, beside published anchors; the champion alias.

    python -m pipeline.stages.report            # the stage: reports/summary.md and its figures
    python -m pipeline.stages.report --readme   # also rewrite the results of README.md and docs/results.md

Reads only the pipeline's own outputs (metrics/, plots/). The champion of a task is the
model with the better *validation* metric; the test set plays no part in the choice. Models
within `report.tie_rtol` of each other tie, and a tie goes to fewer parameters, then to the
model name (pipeline/selection.py). With tracking on, the registered model of
the task (named after it) gets the aliases `champion` and `challenger` on the newest version of
the first and second model, and the report is logged to every run it describes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline import selection
from pipeline.anchors import anchors_of
from pipeline.config import Config, load_config, setup_logging
from pipeline.files import read_json, save_png, write_text_atomic
from pipeline.kinds.registry import kind_of
from pipeline.layout import RunPaths, run_paths
from pipeline.markdown import number, replace_block, table
from pipeline.training.plots import epoch_axis, pyplot, read_csv

log = logging.getLogger(__name__)

README, RESULTS_PAGE, GATES_PAGE = Path("README.md"), Path("docs/results.md"), Path("docs/validation.md")
OTHER_HOSTS = "hosts.json"   # under paths.metrics: the same runs' figures from other CPU kinds (docs/results.md)


def validation_key(task) -> str:
    return f"best/val/{task.metric}"


def ranking(task, train: dict[str, dict], tie_rtol: float) -> list[str]:
    """The models, best first, on the validation metric (never test), ties within `tie_rtol`
    going to fewer parameters (`params/count`), then to the name (pipeline/selection.py)."""
    return selection.ranking({m: t[validation_key(task)] for m, t in train.items()},
                             {m: t["params/count"] for m, t in train.items()}, task.maximize, tie_rtol)


def champion(task, train: dict[str, dict], tie_rtol: float) -> str:
    """The first of `ranking`: the registry's `champion`; the second is its `challenger`."""
    return ranking(task, train, tie_rtol)[0]


def runs_of(config: Config, task: str) -> dict[str, RunPaths]:
    """{model: its output paths} for every model of `task`, in config order."""
    return {run.model: run_paths(config.paths, run.task, run.model, run.head)
            for run in config.runs.values() if run.task == task}


def onnx_cell(report: dict, provider: str, key: str, digits: int = 2) -> str:
    result = report.get(provider, {})
    return number(result.get(key), digits) if result.get("status") == "ok" else result.get("status", "–")


def results_table(task, train: dict[str, dict], onnx: dict[str, dict], best: str) -> str:
    kind, validation = kind_of(task.head), validation_key(task)
    quality, columns = kind.quality, kind.onnx_columns
    pair, first, second = kind.speedups
    cuda_header, _, cuda_key, cuda_digits = columns[0]
    header = ["model", *quality, validation, "params", "train s", "train samples/s", *(c[0] for c in columns),
              f"CPU speed-up {pair}", cuda_header.replace("CPU", "CUDA"), "max abs diff (CPU)"]
    rows = []
    for model in train:
        t, o = train[model], onnx.get(model, {})
        name = f"**{model.upper()}** (champion)" if model == best else model.upper()
        speedup = (f"{o['cpu'][first]:.2f}x / {o['cpu'][second]:.2f}x" if o.get("cpu", {}).get("status") == "ok"
                   else "–")
        rows.append([name, *(number(t.get(k)) for k in quality), number(t.get(validation)),
                     f"{t['params/count']:,}", number(t["train/seconds"], 0), number(t["train/samples_per_s"], 0),
                     *(onnx_cell(o, provider, key, digits) for _, provider, key, digits in columns),
                     speedup, onnx_cell(o, "cuda", cuda_key, cuda_digits), onnx_cell(o, "cpu", "max_abs_diff", 7)])
    floor = {k.replace("baseline/", "test/"): v for k, v in next(iter(train.values())).items()
             if k.startswith("baseline/")}
    extra = [(f"naive floor: {kind.floor}", floor, 4),
             *((name, values, 3) for group in anchors_of(task) for name, values in group.figures.items())]
    for name, values, digits in extra:
        rows.append([f"*{name}*", *(number(values.get(k), digits) if k in values else "–" for k in quality)]
                    + ["–"] * (len(header) - 1 - len(quality)))
    return table(header, rows)


def peephole_finding(config: Config, task, train: dict[str, dict]) -> str | None:
    """One sentence: does the peephole LSTM beat, tie with or lose to the plain LSTM on this task
    (validation decides, with the champion's tie rule; test is shown beside it)? None when the
    task lacks either cell."""
    by_cell = {config.model[model].cell: model for model in train}
    if not {"lstm", "lstm_peephole"} <= by_cell.keys():
        return None
    plain, peephole = train[by_cell["lstm"]], train[by_cell["lstm_peephole"]]
    validation, test = validation_key(task), f"test/{task.metric}"
    better = (peephole[validation] > plain[validation]) if task.maximize else (peephole[validation] < plain[validation])
    tie_rtol = config.report.tie_rtol
    verdict = (f"ties with (within report.tie_rtol = {tie_rtol:g})"
               if selection.ties(peephole[validation], plain[validation], tie_rtol)
               else "beats" if better else "does not beat")
    return (f"Peepholes: the peephole LSTM {verdict} the plain LSTM on validation "
            f"({validation} {peephole[validation]:.4f} against {plain[validation]:.4f}; "
            f"{test} {peephole[test]:.4f} against {plain[test]:.4f}).")


def overlay_curves(task: str, runs: dict[str, RunPaths], out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, paths in runs.items():
        rows = read_csv(paths.curves_plot)
        epochs = [int(r["epoch"]) for r in rows]
        for key, style in (("train/loss", "--"), ("val/loss", "-")):
            ax.plot(epochs, [float(r[key]) for r in rows], style, marker="o", label=f"{model.upper()} {key}")
    epoch_axis(ax)
    ax.set_ylabel("loss")
    ax.set_title(f"{task}: learning curves")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, out)


def build_report(config: Config, out_dir: Path) -> tuple[str, dict[str, str], list[Path]]:
    """(markdown, champion per task, figure files)."""
    sections, champions, figures = [], {}, []
    for task, settings in config.task.items():
        runs = runs_of(config, task)
        train = {m: read_json(paths.train_metrics) for m, paths in runs.items()}
        onnx = {m: read_json(paths.onnx_metrics) for m, paths in runs.items() if paths.onnx_metrics.is_file()}
        best = champions[task] = champion(settings, train, config.report.tie_rtol)
        figures.append(overlay_curves(task, runs, out_dir / f"{task}-curves.png"))
        lines = [f"## {task}", "", results_table(settings, train, onnx, best), "",
                 f"Champion: **{best.upper()}**, chosen on `{validation_key(settings)}` (validation only; "
                 f"within {config.report.tie_rtol:.1%} of the best, fewer parameters win)."]
        finding = peephole_finding(config, settings, train)
        lines += [*([] if finding is None else ["", finding]), "", f"![{task} learning curves]({figures[-1].name})"]
        extra, extra_figures = kind_of(settings.head).report_sections(task, settings, runs, out_dir)
        lines += [*([""] if extra else []), *extra]
        figures += extra_figures
        sections.append("\n".join(lines))
    markdown = "\n\n".join([
        "# LSTM, GRU and the peephole LSTM",
        "Generated by `python -m pipeline.stages.report` from the pipeline's own outputs "
        "(`metrics/train`, `metrics/onnx`, `plots/train`). Published anchors in italics. "
        "Latencies are onnxruntime p50; speed-up is against PyTorch eager in the same process.",
        *sections]) + "\n"
    return markdown, champions, figures


def headline_anchor(task, train: dict[str, dict], best: str) -> list[str]:
    """One README row: the task's champion beside its best published anchor, on the first of
    the kind's quality metrics that the anchors report (test/acc, test/mse, anchor/val10_loss)."""
    kind, figures = kind_of(task.head), {n: v for g in anchors_of(task) for n, v in g.figures.items()}
    metric = next((k for k in kind.quality if any(k in v for v in figures.values())), kind.quality[0])
    scored = {n: v[metric] for n, v in figures.items() if metric in v}
    anchor = (max if task.maximize else min)(scored, key=scored.get) if scored else None
    floor = train[best].get("baseline/" + metric[len("test/"):]) if metric.startswith("test/") else None
    return [f"**{best.upper()}**", f"`{metric}`", number(train[best].get(metric)),
            "–" if anchor is None else f"{number(scored[anchor], 3)} ({anchor})", number(floor)]


def train_metrics(config: Config) -> dict[str, dict]:
    """{run: its metrics/train record} for every run of the config."""
    return {run: read_json(run_paths(config.paths, r.task, r.model, r.head).train_metrics)
            for run, r in config.runs.items()}


def hosts_of(train: dict[str, dict]) -> list[str]:
    """The CPU kinds the runs trained on (each training run records its own)."""
    return sorted({metrics.get("host", "unrecorded") for metrics in train.values()})


def host_line(train: dict[str, dict]) -> str:
    return (f"Host: `{'`, `'.join(hosts_of(train))}` (the kind of CPU the runs trained on: another kind gives "
            "slightly other figures, see docs/results.md, \"By host\").")


def headline_table(config: Config, champions: dict[str, str], train: dict[str, dict]) -> str:
    """The README's results: one row per task, and the host kind they come from (`train`: every
    run's metrics/train record)."""
    rows = []
    for task, best in champions.items():
        of_task = {r.model: train[run] for run, r in config.runs.items() if r.task == task}
        rows.append([task, *headline_anchor(config.task[task], of_task, best)])
    header = ["task", "champion (on validation)", "metric", "champion", "best published anchor", "naive floor"]
    return table(header, rows) + "\n\n" + host_line(train)


def hosts_table(config: Config, train: dict[str, dict]) -> str:
    """Each run's test metric and training seconds on this run's host and on the other CPU kinds
    recorded in metrics/hosts.json (each with where its figures come from)."""
    others = read_json(Path(config.paths.metrics) / OTHER_HOSTS)
    header = ["run", "metric", f"this run: `{', '.join(hosts_of(train))}`", *(f"`{host}`" for host in others)]
    rows = []
    for run, metrics in train.items():
        key = f"test/{config.task[config.runs[run].task].metric}"
        cells = [metrics] + [record["runs"].get(run, {}) for record in others.values()]
        rows.append([run, f"`{key}`", *(f"{number(c.get(key))} ({number(c.get('train/seconds'), 0)} s)"
                                        if "train/seconds" in c else number(c.get(key)) for c in cells)])
    sources = [f"- `{host}`: {record['source']}." for host, record in others.items()]
    return table(header, rows) + "\n\n" + "\n".join(sources)


def full_tables(markdown: str) -> str:
    """Every task's table of the report, under its name (the docs' results page)."""
    tables = "\n\n".join(block for block in markdown.split("\n\n") if block.startswith("| "))
    titles = [line for line in markdown.splitlines() if line.startswith("## ")]
    return "\n\n".join(f"**{t[3:]}**\n\n{tab}" for t, tab in zip(titles, tables.split("\n\n")))


def margins_table(config: Config, train: dict[str, dict]) -> str:
    """Each run's gates on the CPU as a fraction of their limits (<= 1 passes; the rest is the
    margin), from its validation record, with the host it ran on."""
    rows = []
    for run, r in config.runs.items():
        record = read_json(run_paths(config.paths, r.task, r.model, r.head).onnx_metrics).get("cpu", {})
        if record.get("status") != "ok" or "parity" not in record:
            continue
        rows.append([run, f"`{train[run].get('host', 'unrecorded')}`", f"{record['parity']:.2g} ({record['parity_at']})",
                     f"{record['state_parity']:.2g} ({record['state_parity_at']})" if "state_parity" in record else "–",
                     f"{record['metric_delta'] / record['metric_limit']:.2g}",
                     f"{record['int8_metric_change'] / record['int8_metric_change_limit']:.2g}"
                     if "int8_metric_change" in record else "–",
                     f"{record['max_abs_diff']:.2g}"])
    header = ["run", "host", "parity / tolerance (worst output)", "state parity / tolerance",
              "test metric change / limit", "INT8 metric change / limit", "max abs diff"]
    return table(header, rows)


def results_pages(config: Config, markdown: str, champions: dict[str, str]) -> dict[Path, str]:
    """{file: its new text}: the README's one-row-per-task table, docs/results.md's full tables
    and by-host table, and docs/validation.md's margins."""
    train = train_metrics(config)   # read once, for every block
    readme = replace_block(README.read_text(encoding="utf-8"), "results", headline_table(config, champions, train),
                           README)
    page = replace_block(RESULTS_PAGE.read_text(encoding="utf-8"), "results",
                         full_tables(markdown) + "\n\n" + host_line(train), RESULTS_PAGE)
    gates = replace_block(GATES_PAGE.read_text(encoding="utf-8"), "margins", margins_table(config, train), GATES_PAGE)
    return {README: readme, RESULTS_PAGE: replace_block(page, "hosts", hosts_table(config, train), RESULTS_PAGE),
            GATES_PAGE: gates}


def missing_handoffs(config: Config) -> list[str]:
    """Train stages' MLflow hand-offs that are not on disk (their models were never trained or
    pulled here); promoting champions needs every one of them."""
    return [str(paths.handoff) for task in config.task for paths in runs_of(config, task).values()
            if not paths.handoff.is_file()]


def promote_champions(config: Config, champions: dict[str, str], report: Path) -> None:
    """Aliases `champion` and `challenger` on the registered model of each task (the versions that
    the runs of the first and second of `ranking` registered); log the report to each run."""
    from pipeline.tracking import open_tracker, registry_set_aliases

    for task, best in champions.items():
        runs = runs_of(config, task)
        ranked = ranking(config.task[task], {m: read_json(paths.train_metrics) for m, paths in runs.items()},
                         config.report.tie_rtol)
        handoffs = {model: read_json(paths.handoff) for model, paths in runs.items()}
        run_ids = {model: handoff["run_id"] for model, handoff in handoffs.items() if handoff.get("run_id")}
        registry_set_aliases(config.tracking, task, ranked, run_ids)
        for model, paths in runs.items():
            handoff = handoffs[model]
            if handoff.get("run_id"):
                tracker = open_tracker(config.tracking, task, model, run_id=handoff["run_id"])
                tracker.log_artifact(report, "report")
                tracker.set_tags({"champion": str(model == best).lower()})
                tracker.end()


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages.report")
    parser.add_argument("--readme", action="store_true",
                        help="also rewrite the results blocks of README.md and docs/results.md")
    args = parser.parse_args(argv)
    config = load_config()
    out_dir = Path(config.paths.reports)
    markdown, champions, _ = build_report(config, out_dir)
    write_text_atomic(out_dir / "summary.md", markdown)
    if args.readme:
        for path, text in results_pages(config, markdown, champions).items():
            write_text_atomic(path, text)
    if config.tracking.enabled:
        missing = missing_handoffs(config)
        if missing:  # checked before the registry changes, so that no task is half promoted
            log.error("report: %s not found: the champion alias needs every train stage's MLflow hand-off; "
                      "run `dvc repro` (or `dvc pull`) for the missing runs, or set tracking.enabled=false "
                      "(%s and the figures were written)", ", ".join(missing), out_dir / "summary.md")
            return 1
        promote_champions(config, champions, out_dir / "summary.md")
    log.info("report: %s; champions %s", out_dir / "summary.md", champions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
