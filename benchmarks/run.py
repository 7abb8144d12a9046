"""One command that measures the pipeline side by side, on this machine:

    python -m benchmarks.run                 # after `dvc repro`; writes benchmarks/results/<host-kind>.{json,md}

(a) train      samples/s and tokens (or time steps)/s of pipeline.stages.train's loop against a bare
               PyTorch loop, same model, same batches; the ratio must be >= 0.95
(a2) peephole  training samples/s of the peephole LSTM against nn.LSTM, same settings, same
               batches, bare loop; the ratio's target is >= 0.5
(b) roofline   the same throughput in FLOP/s, as a fraction of a large matmul measured in this run
(c) onnx       onnxruntime (CPU and CUDA providers), fp32 and INT8, against PyTorch eager: p50/p95
               latency and throughput at batch 1 and 64, and the speed-up targets
(c2) profile   the op types that take the time, from onnxruntime's profiler and torch.profiler
(c3) unrolled  a segmented forecaster's encoder exported as T explicit steps of MatMuls (time
               axis fixed) against the exported fused LSTM/GRU node: onnxruntime CPU latency,
               speed-up over PyTorch and GFLOP/s at batch 1 and 64, beside the matmul peak
(c4) train-profile  where a training step's time goes (torch.profiler): phases, aten ops, padding
(d) export     seconds of torch.onnx.export per model
(e) prepare    IMDB prepare throughput (reviews/s), ETTh1 rows/s
(f) repro      `dvc repro` wall time: full (a fresh clone of HEAD, empty cache) and no-op (all up
               to date; must be <= 5 s)
(g) serve      each task's champion behind `mlflow models serve` on 127.0.0.1: throughput and p50 /
               p95 / p99 under a bounded load from concurrent clients, and every over-limit or
               malformed request sent during it refused with its 4xx (benchmarks/serving_load.py)
(h) browser    each task's champion in headless Chromium on onnxruntime-web (the site of
               `python -m pipeline.deploy.web build`) against Python onnxruntime, same model file,
               same input: ms per answer and to create the session

Every figure is the median of --repeats runs, with min and max (and the runs' values). Sections
run in the order above, each a module of benchmarks/sections/ that measures it and writes its
table; --only picks some, --runs some task-model runs, and --timing-runs the timed calls behind
each latency and profile figure (validate's 100 at batch 1 and 20 at batch 64 by default). The
machine should be otherwise idle. A quick look:

    python -m benchmarks.run --runs imdb-lstm,etth1-gru --timing-runs 3 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import sections
from benchmarks.common import host_info
from benchmarks.sections import (browser, export, onnx, peephole, prepare, profile, repro, roofline, serve, train,
                                 train_profile, unrolled)
from pipeline.config import Config, load_config
from pipeline.training.distributed import pick_device, set_deterministic
from pipeline.files import read_json, write_json_atomic, write_text_atomic
from pipeline.hosts import host_kind
from pipeline.kinds import SETTINGS
from pipeline.kinds.forecaster_settings import NAME as FORECASTER
from pipeline.kinds.registry import kind_of
from pipeline.tracking import git_tags

SECTIONS = tuple(sections.SECTIONS)


def markdown(results: dict) -> str:
    """The results file's table: its host and run, then each section it has, in order."""
    host = results["host"]
    lines = [f"# Benchmarks: {results['host_kind']}",
             f"{host.get('gpu') or host['cpu']}; {host['cores']} cores, torch {host['torch']} "
             f"({host['torch_threads']} threads), onnxruntime {host['onnxruntime']}; commit "
             f"{results['commit'][:10]}; {results['date']}. Median (min–max) of {results['repeats']} runs."]
    for module in sections.present(results):
        lines += module.render(results)
    return "\n".join(lines) + "\n"


# ---- the command -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--repro-repeats", type=int, default=1,
                        help="full `dvc repro` runs (each is the whole pipeline; default 1)")
    parser.add_argument("--batches", type=int, default=40, help="training batches per timed run (default 40)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated among {', '.join(SECTIONS)}")
    parser.add_argument("--runs", help="comma-separated task-model runs to measure (default: every run in "
                                       "params.yaml), e.g. imdb-lstm,etth1-gru")
    parser.add_argument("--timing-runs", type=int, metavar="N",
                        help="timed calls per latency and profile figure at each batch (default: validate's, "
                             "100 at batch 1 and 20 at batch 64)")
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--serve-requests", type=int, default=200, help="serve: well-formed requests per task")
    parser.add_argument("--serve-clients", type=int, default=4, help="serve: concurrent clients")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: print (and rewrite the .md beside it) the table of a results file")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose among {list(SECTIONS)}")
    counts = {"--repeats": args.repeats, "--repro-repeats": args.repro_repeats, "--batches": args.batches,
              "--matmul-size": args.matmul_size, "--timing-runs": args.timing_runs,
              "--serve-requests": args.serve_requests, "--serve-clients": args.serve_clients}
    for flag, value in counts.items():
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1, found {value}")
    args.runs = None if args.runs is None else [r.strip() for r in args.runs.split(",") if r.strip()]
    return args


class UsageError(ValueError):
    """An argument that names nothing in params.yaml (exit status 2, as argparse's own errors)."""


def chosen_runs(config: Config, names: list[str] | None) -> dict:
    """{name: run} of params.yaml's runs, all of them or the named ones (in params.yaml's order)."""
    if names is None:
        return dict(config.runs)
    unknown = sorted(set(names) - set(config.runs))
    if unknown:
        raise UsageError(f"--runs: unknown run(s) {unknown}; params.yaml has {sorted(config.runs)}")
    return {name: run for name, run in config.runs.items() if name in names}


def run(args: argparse.Namespace) -> dict:
    from pipeline.latency import LATENCY_BATCHES, REPEATS

    config = load_config()
    device = pick_device(config.train.device)
    set_deterministic(config.train.deterministic)
    runs = chosen_runs(config, args.runs)
    timing_runs = dict(REPEATS) if args.timing_runs is None else {b: args.timing_runs for b in LATENCY_BATCHES}
    results = {"host_kind": host_kind(device), "host": host_info(device), "commit": git_tags()["git.commit"],
               "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "repeats": args.repeats, "sections": args.only,
               "runs": list(runs), "timing_runs": timing_runs}
    tasks = list(dict.fromkeys(run.task for run in runs.values()))

    def each_model(function, *extra, heads=tuple(SETTINGS)):
        return {name: function(config, run.task, run.model, *extra) for name, run in runs.items()
                if run.head in heads}

    # The FLOP counts and batch latencies cover the kinds whose forward pass maps a batch to a
    # batch (classifier, forecaster); a generator's ms per character and prompt rate are measured
    # by its validate stage (metrics/onnx/).
    batch_heads = tuple(name for name in SETTINGS if kind_of(name).batched)

    roofline_dtype = torch.bfloat16 if config.train.precision == "bf16" and device.type == "cuda" else torch.float32
    measures = {
        "train": lambda: each_model(train.measure, device, args.repeats, args.batches, heads=batch_heads),
        "peephole": lambda: {name: peephole.measure(config, name, device, args.repeats, args.batches)
                             for name in tasks if config.task[name].head in batch_heads},
        "roofline": lambda: roofline.measure(results["train"] if "train" in results else
                                             each_model(train.measure, device, args.repeats, args.batches,
                                                        heads=batch_heads),
                                             device, roofline_dtype, args.repeats, args.matmul_size),
        "onnx": lambda: each_model(onnx.measure, args.repeats, timing_runs, heads=batch_heads),
        "profile": lambda: each_model(profile.measure, timing_runs, heads=batch_heads),
        "unrolled": lambda: {"peak": roofline.matmul_peak(torch.device("cpu"), torch.float32, args.repeats,
                                                          args.matmul_size),
                             "models": each_model(unrolled.measure, args.repeats, timing_runs,
                                                  heads=(FORECASTER,))},
        "train-profile": lambda: each_model(train_profile.measure, device, args.batches, heads=batch_heads),
        "export": lambda: each_model(export.measure, args.repeats),
        "prepare": lambda: prepare.measure(config, tasks, args.repeats),
        "repro-full": lambda: repro.measure_full(args.repro_repeats),
        "repro-noop": lambda: repro.measure_noop(args.repeats),
        "serve": lambda: serve.measure(config, tasks, args.serve_requests, args.serve_clients),
        "browser": lambda: browser.measure(config, args.timing_runs or browser.RUNS),
    }
    for section in SECTIONS:  # in the sections' order, whatever the order of --only
        if section in args.only:
            start = time.perf_counter()
            print(f"benchmarks: {section} ...", file=sys.stderr, flush=True)
            results[section] = measures[section]()
            print(f"benchmarks: {section} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        try:
            table = markdown(read_json(args.render))
        except (OSError, ValueError) as exc:
            print(f"benchmarks: --render {args.render}: {exc}", file=sys.stderr)
            return 2
        except KeyError as exc:
            print(f"benchmarks: --render {args.render}: missing key {exc}; is it a benchmarks/results file?",
                  file=sys.stderr)
            return 2
        write_text_atomic(args.render.with_suffix(".md"), table)
        print(table)
        return 0
    for needed in ("params.yaml", "dvc.yaml"):
        if not Path(needed).is_file():
            print(f"benchmarks: {needed} not found in {Path.cwd()}; run from the repository root", file=sys.stderr)
            return 2
    try:
        results = run(args)
    except UsageError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"benchmarks: {exc}\n(run `dvc repro` first: the benchmarks read its models and data)",
              file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, subprocess.SubprocessError) as exc:  # ConfigError is a ValueError
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 1
    table = markdown(results)
    stem = args.out / results["host_kind"]
    write_json_atomic(stem.with_suffix(".json"), results)
    write_text_atomic(stem.with_suffix(".md"), table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
