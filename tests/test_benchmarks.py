"""The benchmark command: its FLOP counts, and one quick run over the fixture pipeline."""

from __future__ import annotations

import json
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.training.flops import classifier_train_flops, forecaster_train_flops
from pipeline.kinds.registry import build_model
from pipeline.deploy.sessions import PROVIDERS, open_session
from pipeline.deploy.web import browser_tools
from tests.conftest import REPO_ROOT, run_in


def counted_train_flops(model, x) -> int:
    """PyTorch's own count of one forward and backward pass. oneDNN's fused LSTM kernel is
    invisible to the counter, so the decomposed kernels run instead."""
    with warnings.catch_warnings():  # switching oneDNN off warns about Intel-GPU TF32, which is beside the point
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
            model(x).float().sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers, bidirectional", [(1, True), (2, True), (2, False)])
def test_classifier_flops_match_pytorchs_flop_counter(cell, layers, bidirectional):
    args = {"vocab_size": 50, "num_classes": 2, "cell": cell, "embedding_dim": 8, "hidden_size": 12,
            "num_layers": layers, "bidirectional": bidirectional, "dropout": 0.1, "embedding_dropout": 0.1,
            "pooling": ["mean", "max"], "pad_id": 0}
    x = torch.randint(1, 50, (3, 11))
    assert classifier_train_flops(args, 3, 11) == counted_train_flops(build_model("classifier", args), x)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("segment_len, independent, decoder", [
    (6, True, "linear"), (0, False, "linear"), (4, False, "linear"), (6, True, "pmf"), (4, False, "pmf")])
def test_forecaster_flops_match_pytorchs_flop_counter(cell, segment_len, independent, decoder):
    args = {"n_channels": 7, "horizon": 12, "cell": cell, "hidden_size": 16, "num_layers": 2, "dropout": 0.0,
            "revin": True, "segment_len": segment_len, "channel_independent": independent, "decoder": decoder}
    x = torch.randn(4, 24, 7)
    assert forecaster_train_flops(args, 4, 24) == counted_train_flops(build_model("forecaster", args), x)


@pytest.fixture
def bench_repo(pipeline_copy):
    """A copy of the fixture pipeline, all stages up to date, with the benchmarks beside it."""
    repo, *_ = pipeline_copy
    shutil.copytree(REPO_ROOT / "benchmarks", repo / "benchmarks", ignore=shutil.ignore_patterns("results"))
    (repo / "web").symlink_to(REPO_ROOT / "web")   # the page and its npm package, for (h) browser
    return repo


@pytest.fixture
def browser_ready(request):
    """(h) browser's npm packages installed once for the session (web_package), where it runs."""
    if BROWSER:
        request.getfixturevalue("web_package")


@pytest.mark.parametrize("values, target, higher_is_better, met", [
    ([0.94, 0.96], 0.95, True, True), ([0.93, 0.96], 0.95, True, False), ([0.5, 2.0, 0.9], 1.0, True, False),
    ([4.0, 6.0], 5.0, False, True), ([4.0, 6.2], 5.0, False, False)])
def test_a_target_is_met_when_the_median_of_the_runs_reaches_it(values, target, higher_is_better, met):
    from benchmarks.common import verdict

    result = verdict(values, target, higher_is_better)
    assert result["met"] is met and result["target"] == target and result["stats"]["values"] == values
    assert result["stats"]["min"] == min(values) and result["stats"]["max"] == max(values)


# Both heads with latency targets (the classifier's LSTM, the forecaster's GRU) at a few timed
# calls, and the full size (every run, validate's timed calls) under `slow`.
QUICK = ["--runs", "imdb-lstm,etth1-gru", "--timing-runs", "3"]
# (h) browser runs where Node.js and Chromium are (the browser tests' condition, tests/test_web.py).
BROWSER = all(browser_tools())


@pytest.mark.parametrize("size", [QUICK, pytest.param([], marks=pytest.mark.slow)], ids=["quick", "full"])
def test_one_command_measures_every_section_with_medians_and_writes_the_table(bench_repo, browser_ready, tmp_path, size):
    from pipeline.config import load_config
    from pipeline.latency import REPEATS

    out = tmp_path / "results"
    sections = "train,peephole,roofline,onnx,profile,unrolled,train-profile,export,prepare,repro-noop" + (
        ",browser" if BROWSER else "")
    result = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--repeats", "2", "--batches", "2",
                    "--matmul-size", "128", "--only", sections, "--out", str(out), *size)
    (json_file,) = out.glob("*.json")
    assert json_file.stem.startswith("cpu-") or json_file.stem.startswith("cuda-")
    results = json.loads(json_file.read_text())
    assert results["sections"] == sections.split(",")
    config = load_config(bench_repo / "params.yaml")
    chosen = QUICK[1].split(",") if size else list(config.runs)
    measured = [name for name in chosen if config.runs[name].head != "generator"]   # batch latencies and FLOPs
    timing_runs = {1: 3, 64: 3} if size else REPEATS
    assert {int(b): n for b, n in results["timing_runs"].items()} == timing_runs

    def check(stat, n=2):
        assert stat["n"] == n == len(stat["values"]) and stat["min"] <= stat["median"] <= stat["max"], stat
        assert stat["median"] == pytest.approx(float(np.median(stat["values"])))

    for section in ("train", "onnx", "profile", "train-profile"):
        assert sorted(results[section]) == sorted(measured), section   # --runs, nothing more
    for name, step in results["train-profile"].items():   # every phase timed, the shares of one step
        assert set(step["phases"]) == {"forward", "loss", "backward", "clip", "optimizer"}, name
        assert sum(p["share"] for p in step["phases"].values()) == pytest.approx(1.0) and step["top_ops"]
        assert (step["padding_share"] > 0) is (config.runs[name].head == "classifier")   # right-padded texts only
    assert sorted(results["unrolled"]["models"]) == [n for n in sorted(measured) if config.runs[n].head == "forecaster"]
    assert sorted(results["export"]) == sorted(chosen)                 # a generator exports too
    assert sorted(results["peephole"]) == sorted({config.runs[n].task for n in measured})   # tasks with targets
    assert sorted(results["prepare"]) == sorted({config.runs[n].task for n in chosen})
    table = (out / f"{json_file.stem}.md").read_text()
    training = table.split("## (a) Training throughput")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in training.splitlines() if line.startswith("| ")}
    for name in measured:
        train = results["train"][name]
        for loop in ("ours", "bare"):
            check(train[loop]["samples_per_s"])
            assert train[loop]["samples_per_s"]["median"] > 0
            assert train[loop]["samples_per_s"]["values"] == pytest.approx(
                [train["samples"] / s for s in train[loop]["seconds"]["values"]])
        ratios = [b / o for o, b in zip(train["ours"]["seconds"]["values"], train["bare"]["seconds"]["values"])]
        assert train["ratio_ours_to_bare"]["values"] == pytest.approx(ratios)   # ours/bare throughput, per run
        assert ("**missed**" in rows[name]) is not train["ratio_met"]          # the table says what the JSON says
        assert train["batches"] == 2 and 0 < train["samples"] <= 2 * train["batch_size"]
        # the fraction is the loop's FLOP/s over the ceiling measured in the same run (whether it is
        # below 1 is a timing, and a 128 x 128 matmul timed twice beside other tests is noise)
        roofline, peak = results["roofline"]["models"][name], results["roofline"]["peak"]["flop_per_s"]["median"]
        assert roofline["fraction_of_peak"]["median"] == pytest.approx(train["ours"]["flop_per_s"]["median"] / peak)
        assert roofline["fraction_of_peak"]["median"] > 0 and roofline["ours_flop_per_s"] > 0
        cpu = results["onnx"][name]["cpu"]
        assert cpu["status"] == "ok"
        check(cpu["latency_ms_b1_p50"])
        assert cpu["latency_ms_b64_p95"]["median"] >= cpu["latency_ms_b64_p50"]["median"]
        assert cpu["speedup_vs_torch_b64"]["values"] == pytest.approx(
            [t / o for t, o in zip(cpu["torch_latency_ms_b64_p50"]["values"], cpu["latency_ms_b64_p50"]["values"])])
        assert cpu["target"] == 1.2
        int8, gru = cpu["int8"], name.endswith("-gru")
        check(int8["latency_ms_b1_p50"])
        fp32_bytes = (bench_repo / "onnx" / name / "model.onnx").stat().st_size
        assert 0 < int8["bytes"] == (bench_repo / "onnx" / name / "model.int8.onnx").stat().st_size
        assert int8["target"] == (None if gru else 2.0) and fp32_bytes > 0
        if gru:
            assert int8["target_met_b1"] is True   # no target to miss
        for batch in ("b1", "b64"):  # the profile shows which kernel runs the recurrence
            profile = results["profile"][name][batch]
            assert profile["torch"]["ms_total"] > 0 and 0 < profile["fp32"]["top"][0]["share"] <= 1
            assert ("GRU" if gru else "LSTM") in profile["fp32"]["ops"]
            assert ("GRU" if gru else "DynamicQuantizeLSTM") in profile["int8"]["ops"]  # no quantised GRU kernel
        if config.runs[name].head == "forecaster":   # (c3): the same model as one fused node and unrolled
            unrolled = results["unrolled"]["models"][name]
            assert unrolled["steps"] == 24 // 6                      # the tiny lookback over its segments
            for form in ("fused", "unrolled"):
                assert unrolled[form]["max_abs_diff"] < 1e-4         # the two graphs compute the model
                check(unrolled[form]["latency_ms_b64_p50"])          # --repeats turns of each form
                assert unrolled[form]["speedup_vs_torch_b64"]["values"] == pytest.approx(
                    [t / o for t, o in zip(unrolled[form]["torch_latency_ms_b64_p50"]["values"],
                                           unrolled[form]["latency_ms_b64_p50"]["values"])])
                assert unrolled[form]["gflop_per_s_b64"]["median"] > 0
            assert f"| {name} | 4 | unrolled |" in table and f"| {name} | 4 | fused |" in table
        if open_session(bench_repo / "onnx" / name / "model.onnx", PROVIDERS["cuda"])[0] is None:
            # never CPU figures as CUDA: onnxruntime's reason, and nothing else
            assert set(results["onnx"][name]["cuda"]) == {"status", "reason"}
            assert results["onnx"][name]["cuda"]["status"] == "unavailable"
        check(results["export"][name]["seconds"])
    for task in results["peephole"]:
        peephole = results["peephole"][task]
        check(peephole["lstm_peephole"]["samples_per_s"])
        check(peephole["ratio_peephole_to_lstm"])
    assert results["prepare"]["imdb"]["count"] == 2 * 2 * 12 + 10  # the fixture's reviews, unlabelled too
    check(results["prepare"]["imdb"]["texts_per_s"])
    check(results["repro-noop"]["seconds"])
    noop_row = next(line for line in table.splitlines() if line.startswith("| no-op"))
    assert ("**missed**" in noop_row) is not results["repro-noop"]["target_met"]

    if BROWSER:   # every task's champion, in Chromium and in Python, each timed --timing-runs times
        from benchmarks.sections.browser import RUNS

        assert list(results["browser"]["tasks"]) == list(config.task) and results["browser"]["page_threads"] >= 1
        for name, found in results["browser"]["tasks"].items():
            for side in ("browser", "python"):
                check(found[side]["ms"], n=3 if size else RUNS)
                assert found[side]["session_ms"] > 0, (name, side)
        assert "## (h) The champions in the browser" in table

    assert table in result.stdout
    for heading in ("(a) Training throughput", "(a2) Training throughput: the peephole", "(b) Roofline", "(c) onnxruntime",
                    "(c2) Where the time goes", "(d) ONNX export", "(e) Prepare", "(f) `dvc repro`"):
        assert heading in table
    counts = ", ".join(f"{n} at batch {b}" for b, n in timing_runs.items())
    assert f"over the timed runs: {counts}" in table
    assert "| etth1-gru | cpu INT8 (" in table and "| imdb-lstm | cpu INT8 (" in table
    assert "(≥ 2×)" in table and "(no target)" in table
    rendered = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--render", str(json_file))
    assert rendered.stdout.strip() == table.strip()  # the committed table is re-made from its JSON alone


def test_bad_arguments_and_a_missing_pipeline_get_clear_errors(bench_repo, tmp_path):
    result = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--only", "train,speed", check=False)
    assert result.returncode == 2 and "unknown section(s) ['speed']" in result.stderr
    result = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--runs", "imdb-lstm,imdb-cnn",
                    "--out", str(tmp_path / "none"), check=False)
    assert result.returncode == 2 and "--runs: unknown run(s) ['imdb-cnn']; params.yaml has [" in result.stderr
    result = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--timing-runs", "0", check=False)
    assert result.returncode == 2 and "--timing-runs must be at least 1" in result.stderr

    shutil.rmtree(bench_repo / "models")
    result = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--only", "export", "--repeats", "1",
                    "--out", str(tmp_path / "none"), check=False)
    assert result.returncode == 1 and "model.pt" in result.stderr and "run `dvc repro` first" in result.stderr
    assert not (tmp_path / "none").exists()  # nothing half-written


@pytest.mark.parametrize("vendor_id, flags, kind", [
    ("AuthenticAMD", "fpu avx avx2", "cpu-amd-avx2-"),
    ("AuthenticAMD", "avx2 avx512f avx512_bf16", "cpu-amd-avx512bf16-"),
    ("GenuineIntel", "avx2 avx512f", "cpu-intel-avx512-"),
    ("GenuineIntel", "", "cpu-intel-")])
def test_cpu_results_are_named_by_vendor_and_vector_extension_so_different_cpus_never_share_a_file(
        monkeypatch, vendor_id, flags, kind):
    from pipeline import hosts

    fields = {"vendor_id": vendor_id, "flags": flags}
    monkeypatch.setattr(hosts, "cpu_field", lambda field, default="": fields.get(field, default))
    name = hosts.host_kind(torch.device("cpu"))
    assert name.startswith(kind) and name.endswith("core-" + hosts.platform.machine().lower().replace("_", "-"))
    assert name[len(kind):].split("-")[0].endswith("core")  # no extension where none is reported


# cpu-amd-2core-x86-64 predates the INT8 targets, which the table now shows for every row.
COMMITTED = sorted(p for p in (REPO_ROOT / "benchmarks/results").glob("*.json") if p.stem != "cpu-amd-2core-x86-64")


@pytest.mark.parametrize("results", COMMITTED, ids=lambda p: p.stem)
def test_each_committed_table_is_its_json_rendered(results):
    from benchmarks.run import markdown

    assert markdown(json.loads(results.read_text())) == results.with_suffix(".md").read_text()
