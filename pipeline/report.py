"""Stage `report`: LSTM, GRU and peephole LSTM per task, beside published anchors; the champion alias.

    python -m pipeline.report            # the stage: reports/summary.md and its figures
    python -m pipeline.report --readme   # also rewrite the README's results table

Reads only the pipeline's own outputs (metrics/, plots/). The champion of a task is the
model with the better *validation* metric; the test set plays no part in the choice (a tie
goes to fewer parameters, then to the model name). With tracking on, the registered model of
the task (named after it) gets the aliases `champion` and `challenger` on the newest version of
the first and second model, and the report is logged to every run it describes.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.files import read_json, save_png, write_text_atomic
from pipeline.layout import RunPaths, run_paths
from pipeline.plots import epoch_axis, pyplot

log = logging.getLogger(__name__)

# Published reference points (test set; ETTh1: multivariate, L=96, H=96; Tiny Shakespeare: the
# loss over the last 10% of the characters, nanoGPT's "val").
QUALITY = {"classifier": ["test/acc", "test/f1", "test/auc"], "forecaster": ["test/mse", "test/mae"],
           "generator": ["test/loss", "test/bpc", "anchor/val10_loss"]}
FLOORS = {"classifier": "majority class", "forecaster": "repeat last value", "generator": "bigram, fitted on train"}
# ONNX columns per head: (header, provider, key, digits); the speed-up pair of each.
ONNX_COLUMNS = {
    "classifier": [("ONNX CPU b1 ms", "cpu", "latency_ms_b1_p50", 2), ("ONNX CPU b64 ms", "cpu", "latency_ms_b64_p50", 1)],
    "generator": [("ONNX CPU ms/char", "cpu", "ms_per_char", 2),
                  ("ONNX CPU prompt chars/s", "cpu", "prompt_chars_per_s", 0)],
}
ONNX_COLUMNS["forecaster"] = ONNX_COLUMNS["classifier"]
SPEEDUPS = {"classifier": ("b1 / b64", "speedup_vs_torch_b1", "speedup_vs_torch_b64"),
            "generator": ("per char / prompt", "speedup_vs_torch_per_char", "speedup_vs_torch_prompt")}
SPEEDUPS["forecaster"] = SPEEDUPS["classifier"]
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def validation_key(task) -> str:
    return f"best/val/{task.metric}"


def ranking(task, train: dict[str, dict]) -> list[str]:
    """The models, best first, on the validation metric (never test). A tie goes to the model
    with fewer parameters (`params/count`), then to the name in alphabetical order, so that the
    same metrics always give the same order (and the registry the same aliases)."""
    sign = -1 if task.maximize else 1
    return sorted(train, key=lambda m: (sign * train[m][validation_key(task)], train[m]["params/count"], m))


def champion(task, train: dict[str, dict]) -> str:
    """The first of `ranking`: the registry's `champion`; the second is its `challenger`."""
    return ranking(task, train)[0]


def runs_of(config: Config, task: str) -> dict[str, RunPaths]:
    """{model: its output paths} for every model of `task`, in config order."""
    return {run.model: run_paths(config.paths, run.task, run.model, run.head)
            for run in config.runs.values() if run.task == task}


def fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def anchors_of(task) -> list:
    """The task's published figure groups whose protocol its prepare settings match: figures are
    facts about one dataset under one protocol, never about a head, so a CSV task without
    anchors, or ETTh1 at another horizon, shows none."""
    prepare = task.prepare.model_dump()
    return [group for group in task.anchors if group.dataset in (None, task.source.checksum)
            and all(prepare.get(k) == v for k, v in group.protocol.items())]


def onnx_cell(report: dict, provider: str, key: str, digits: int = 2) -> str:
    result = report.get(provider, {})
    return fmt(result.get(key), digits) if result.get("status") == "ok" else result.get("status", "–")


def results_table(task, train: dict[str, dict], onnx: dict[str, dict], best: str) -> str:
    kind, validation = task.head, validation_key(task)
    quality, columns = QUALITY[kind], ONNX_COLUMNS[kind]
    pair, first, second = SPEEDUPS[kind]
    cuda_header, _, cuda_key, cuda_digits = columns[0]
    header = ["model", *quality, validation, "params", "train s", "train samples/s", *(c[0] for c in columns),
              f"CPU speed-up {pair}", cuda_header.replace("CPU", "CUDA"), "max abs diff (CPU)"]
    rows = []
    for model in train:
        t, o = train[model], onnx.get(model, {})
        name = f"**{model.upper()}** (champion)" if model == best else model.upper()
        speedup = (f"{o['cpu'][first]:.2f}x / {o['cpu'][second]:.2f}x" if o.get("cpu", {}).get("status") == "ok"
                   else "–")
        rows.append([name, *(fmt(t.get(k)) for k in quality), fmt(t.get(validation)),
                     f"{t['params/count']:,}", fmt(t["train/seconds"], 0), fmt(t["train/samples_per_s"], 0),
                     *(onnx_cell(o, provider, key, digits) for _, provider, key, digits in columns),
                     speedup, onnx_cell(o, "cuda", cuda_key, cuda_digits), onnx_cell(o, "cpu", "max_abs_diff", 7)])
    floor = {k.replace("baseline/", "test/"): v for k, v in next(iter(train.values())).items()
             if k.startswith("baseline/")}
    extra = [(f"naive floor: {FLOORS[kind]}", floor, 4),
             *((name, values, 3) for group in anchors_of(task) for name, values in group.figures.items())]
    for name, values, digits in extra:
        rows.append([f"*{name}*", *(fmt(values.get(k), digits) if k in values else "–" for k in quality)]
                    + ["–"] * (len(header) - 1 - len(quality)))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def peephole_finding(config: Config, task, train: dict[str, dict]) -> str | None:
    """One sentence: does the peephole LSTM beat the plain LSTM on this task (validation decides,
    as for the champion; test is shown beside it)? None when the task lacks either cell."""
    by_cell = {config.model[model].cell: model for model in train}
    if not {"lstm", "lstm_peephole"} <= by_cell.keys():
        return None
    plain, peephole = train[by_cell["lstm"]], train[by_cell["lstm_peephole"]]
    validation, test = validation_key(task), f"test/{task.metric}"
    better = (peephole[validation] > plain[validation]) if task.maximize else (peephole[validation] < plain[validation])
    verdict = "beats" if better else "does not beat"
    return (f"Peepholes: the peephole LSTM {verdict} the plain LSTM on validation "
            f"({validation} {peephole[validation]:.4f} against {plain[validation]:.4f}; "
            f"{test} {peephole[test]:.4f} against {plain[test]:.4f}).")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


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


def scale_of(settings) -> dict:
    """What the forecast figure needs to show data units, from the committed data card (the
    prepared data is not in git): columns, train mean and std, and the configured units. The
    plotted column is the last target, as in pipeline/plots.py."""
    card = read_json(settings.paths.card)
    columns = card["columns"]
    return {"columns": columns, "target_index": [len(columns) - 1], "units": settings.prepare.units or {},
            "mean": [card["train_mean"][c] for c in columns], "std": [card["train_std"][c] for c in columns]}


def overlay_forecasts(task: str, runs: dict[str, RunPaths], meta: dict, out: Path) -> Path:
    """Every model's forecast of the target column beside the truth, in the data's units."""
    from pipeline.plots import value_label

    plt = pyplot()
    series = {model: read_csv(paths.head_plot) for model, paths in runs.items()}
    first = next(iter(series.values()))
    windows = sorted({r["window"] for r in first}, key=int)
    channel = meta["target_index"][-1]
    mean, std = meta["mean"][channel], meta["std"][channel]
    fig, axes = plt.subplots(1, len(windows), figsize=(4 * len(windows), 3.2), sharey=True)
    for ax, window in zip(axes, windows):
        rows = {m: [r for r in series[m] if r["window"] == window] for m in series}
        ax.plot([float(r["truth"]) * std + mean for r in next(iter(rows.values()))], color="black", label="truth")
        for model in series:
            ax.plot([float(r["forecast"]) * std + mean for r in rows[model]], label=model.upper())
        ax.set_title(f"test window {window}")
        ax.set_xlabel("step (from the forecast start)")
    axes[0].set_ylabel(value_label(meta, channel))
    axes[0].legend()
    fig.tight_layout()
    return save_png(fig, out)


def samples(runs: dict[str, RunPaths]) -> list[str]:
    """Each model's final sample (500 characters from the fixed prompt, temperature 0.8, seed 0)."""
    lines = []
    for model, paths in runs.items():
        text = (paths.figures / "sample.txt").read_text(encoding="utf-8")
        lines += ["", f"{model.upper()} sample (500 characters after the prompt, temperature 0.8, seed 0):", "",
                  "```text", text.replace("\n\n", "\n \n").rstrip(), "```"]
    return lines


def build_report(config: Config, out_dir: Path) -> tuple[str, dict[str, str], list[Path]]:
    """(markdown, champion per task, figure files)."""
    sections, champions, figures = [], {}, []
    for task, settings in config.task.items():
        runs = runs_of(config, task)
        train = {m: read_json(paths.train_metrics) for m, paths in runs.items()}
        onnx = {m: read_json(paths.onnx_metrics) for m, paths in runs.items() if paths.onnx_metrics.is_file()}
        best = champions[task] = champion(settings, train)
        figures.append(overlay_curves(task, runs, out_dir / f"{task}-curves.png"))
        lines = [f"## {task}", "", results_table(settings, train, onnx, best), "",
                 f"Champion: **{best.upper()}**, chosen on `{validation_key(settings)}` (validation only)."]
        finding = peephole_finding(config, settings, train)
        lines += [*([] if finding is None else ["", finding]), "", f"![{task} learning curves]({figures[-1].name})"]
        if settings.head == "forecaster":
            figures.append(overlay_forecasts(task, runs, scale_of(settings), out_dir / f"{task}-forecasts.png"))
            lines += ["", f"![{task} forecasts]({figures[-1].name})"]
        if settings.head == "generator":
            lines += samples(runs)
        sections.append("\n".join(lines))
    markdown = "\n\n".join([
        "# LSTM, GRU and the peephole LSTM",
        "Generated by `python -m pipeline.report` from the pipeline's own outputs "
        "(`metrics/train`, `metrics/onnx`, `plots/train`). Published anchors in italics. "
        "Latencies are onnxruntime p50; speed-up is against PyTorch eager in the same process.",
        *sections]) + "\n"
    return markdown, champions, figures


def replace_readme_table(readme: Path, markdown: str) -> str:
    """The README with its results block replaced by the report's tables."""
    text = readme.read_text(encoding="utf-8")
    tables = "\n\n".join(block for block in markdown.split("\n\n") if block.startswith("| "))
    titles = [line for line in markdown.splitlines() if line.startswith("## ")]
    body = "\n\n".join(f"**{t[3:]}**\n\n{tab}" for t, tab in zip(titles, tables.split("\n\n")))
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no {README_START} ... {README_END} block to fill")
    return pattern.sub(lambda _: f"{README_START}\n{body}\n{README_END}", text)


def missing_handoffs(config: Config) -> list[str]:
    """Train stages' MLflow hand-offs that are not on disk (their models were never trained or
    pulled here); promoting champions needs every one of them."""
    return [str(paths.handoff) for task in config.task for paths in runs_of(config, task).values()
            if not paths.handoff.is_file()]


def promote_champions(config: Config, champions: dict[str, str], report: Path) -> None:
    """Aliases `champion` and `challenger` on the registered model of each task (the newest
    version of the first and second of `ranking`); log the report to each run."""
    from pipeline.tracking import open_tracker, registry_set_aliases

    for task, best in champions.items():
        runs = runs_of(config, task)
        ranked = ranking(config.task[task], {m: read_json(paths.train_metrics) for m, paths in runs.items()})
        registry_set_aliases(config.tracking, task, ranked)
        for model, paths in runs.items():
            handoff = read_json(paths.handoff)
            if handoff.get("run_id"):
                tracker = open_tracker(config.tracking, task, model, run_id=handoff["run_id"])
                tracker.log_artifact(report, "report")
                tracker.set_tags({"champion": str(model == best).lower()})
                tracker.end()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m pipeline.report")
    parser.add_argument("--readme", action="store_true", help="also rewrite README.md's results table")
    args = parser.parse_args(argv)
    config = load_config()
    out_dir = Path(config.paths.reports)
    markdown, champions, _ = build_report(config, out_dir)
    write_text_atomic(out_dir / "summary.md", markdown)
    if args.readme:
        write_text_atomic("README.md", replace_readme_table(Path("README.md"), markdown))
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
