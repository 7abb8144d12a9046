"""The benchmark command: its FLOP counts, and one quick run over the fixture pipeline."""

from __future__ import annotations

import json
import shutil
import sys
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.flops import classifier_train_flops, forecaster_train_flops
from pipeline.models import build_model
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
@pytest.mark.parametrize("segment_len, independent", [(6, True), (0, False), (4, False)])
def test_forecaster_flops_match_pytorchs_flop_counter(cell, segment_len, independent):
    args = {"n_channels": 7, "horizon": 12, "cell": cell, "hidden_size": 16, "num_layers": 2, "dropout": 0.0,
            "revin": True, "segment_len": segment_len, "channel_independent": independent}
    x = torch.randn(4, 24, 7)
    assert forecaster_train_flops(args, 4, 24) == counted_train_flops(build_model("forecaster", args), x)


@pytest.fixture
def bench_repo(pipeline_repo, tmp_path):
    """A copy of the fixture pipeline, all stages up to date, with the benchmarks beside it."""
    source, *_ = pipeline_repo
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    shutil.copytree(REPO_ROOT / "benchmarks", repo / "benchmarks", ignore=shutil.ignore_patterns("results"))
    return repo


def test_one_command_measures_every_section_with_medians_and_writes_the_table(bench_repo, tmp_path):
    out = tmp_path / "results"
    sections = "train,peephole,roofline,onnx,profile,export,prepare,repro-noop"
    result = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--repeats", "2", "--batches", "2",
                    "--matmul-size", "128", "--only", sections, "--out", str(out))
    (json_file,) = out.glob("*.json")
    assert json_file.stem.startswith("cpu-") or json_file.stem.startswith("cuda-")
    results = json.loads(json_file.read_text())
    assert set(sections.split(",")) <= set(results)

    def check(stat):
        assert stat["n"] == 2 and stat["min"] <= stat["median"] <= stat["max"], stat

    for name in ("imdb-lstm", "imdb-gru", "imdb-peephole", "etth1-lstm", "etth1-gru", "etth1-peephole"):
        train = results["train"][name]
        for loop in ("ours", "bare"):
            check(train[loop]["samples_per_s"])
            assert train[loop]["samples_per_s"]["median"] > 0
        check(train["ratio_ours_to_bare"])
        assert train["ratio_met"] == (train["ratio_ours_to_bare"]["median"] >= 0.95)
        assert train["batches"] == 2 and 0 < train["samples"] <= 2 * train["batch_size"]
        assert 0 < results["roofline"]["models"][name]["fraction_of_peak"]["median"]
        cpu = results["onnx"][name]["cpu"]
        assert cpu["status"] == "ok"
        check(cpu["latency_ms_b1_p50"])
        assert cpu["latency_ms_b64_p95"]["median"] >= cpu["latency_ms_b64_p50"]["median"]
        assert cpu["target"] == 1.2 and cpu["target_met_b64"] == (cpu["speedup_vs_torch_b64"]["median"] >= 1.2)
        int8, gru = cpu["int8"], name.endswith("-gru")
        check(int8["latency_ms_b1_p50"])
        assert int8["bytes"] > 0 and int8["target"] == (None if gru else 2.0)
        assert int8["target_met_b1"] == (gru or int8["speedup_vs_torch_b1"]["median"] >= 2.0)
        for batch in ("b1", "b64"):  # the profile shows which kernel runs the recurrence
            profile = results["profile"][name][batch]
            assert profile["torch"]["ms_total"] > 0 and 0 < profile["fp32"]["top"][0]["share"] <= 1
            assert ("GRU" if gru else "LSTM") in profile["fp32"]["ops"]
            assert ("GRU" if gru else "DynamicQuantizeLSTM") in profile["int8"]["ops"]  # no quantised GRU kernel
        if not torch.cuda.is_available():
            assert results["onnx"][name]["cuda"]["status"] == "unavailable"  # never CPU figures as CUDA
        check(results["export"][name]["seconds"])
    for task in ("imdb", "etth1"):
        peephole = results["peephole"][task]
        check(peephole["lstm_peephole"]["samples_per_s"])
        check(peephole["ratio_peephole_to_lstm"])
        assert peephole["ratio_met"] == (peephole["ratio_peephole_to_lstm"]["median"] >= 0.5)
    assert results["prepare"]["imdb"]["count"] == 2 * 2 * 12 + 10  # the fixture's reviews, unlabelled too
    check(results["prepare"]["imdb"]["reviews_per_s"])
    check(results["repro-noop"]["seconds"])
    assert results["repro-noop"]["target_met"] == (results["repro-noop"]["seconds"]["median"] <= 5.0)

    table = (out / f"{json_file.stem}.md").read_text()
    assert table in result.stdout
    for heading in ("(a) Training throughput", "(a2) Training throughput: the peephole", "(b) Roofline", "(c) onnxruntime",
                    "(c2) Where the time goes", "(d) ONNX export", "(e) Prepare", "(f) `dvc repro`"):
        assert heading in table
    assert "| etth1-lstm | cpu INT8 (" in table and "(≥ 2×)" in table and "(no target)" in table
    rendered = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--render", str(json_file))
    assert rendered.stdout.strip() == table.strip()  # the committed table is re-made from its JSON alone


def test_bad_arguments_and_a_missing_pipeline_get_clear_errors(bench_repo, tmp_path):
    result = run_in(bench_repo, sys.executable, "-m", "benchmarks.run", "--only", "train,speed", check=False)
    assert result.returncode == 2 and "unknown section(s) ['speed']" in result.stderr

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
    from benchmarks import run

    fields = {"vendor_id": vendor_id, "flags": flags}
    monkeypatch.setattr(run, "cpu_field", lambda field, default="": fields.get(field, default))
    name = run.host_kind(torch.device("cpu"))
    assert name.startswith(kind) and name.endswith("core-" + run.platform.machine().lower().replace("_", "-"))
    assert name[len(kind):].split("-")[0].endswith("core")  # no extension where none is reported
