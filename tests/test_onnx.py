"""ONNX export, onnxruntime validation and the torch-free deployment path, on the fixture run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from pipeline.training.checkpoints import load_checkpoint
from pipeline.deploy.sessions import PROVIDERS, open_session
from pipeline.kinds.registry import kind_of
from pipeline.config import load_config
from pipeline.parity import scaled_error
from pipeline.stages.validate import failed_gates
from tests.conftest import REPO_ROOT, compose_params, run_in

GATES = load_config(REPO_ROOT / "params.yaml").export.gates   # the committed tolerances


def onnx_path(repo, name):
    return repo / "onnx" / name / "model.onnx"


@pytest.mark.parametrize("name", ["imdb-gru", "etth1-lstm"])
def test_export_has_named_dynamic_io_an_explicit_opset_and_deployment_metadata(pipeline_repo, name):
    repo, *_ = pipeline_repo
    model = onnx.load(str(onnx_path(repo, name)))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rb.task"] == name.split("-")[0] and meta["rb.model"] == name.split("-")[1]
    assert "rb.git_commit" in meta and "test/" in meta["rb.test_metrics"]
    if name.startswith("imdb"):
        assert inputs == {"input_ids": ["batch", "sequence"]}
        assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
        assert json.loads(meta["rb.labels"]) == ["neg", "pos"] and meta["rb.pad_id"] == "0"
        assert meta["rb.max_len"] == "32" and len(meta["rb.tokenizer_sha256"]) == 64
    else:
        assert inputs == {"past": ["batch", "time", 7]}
        assert len(json.loads(meta["rb.mean"])) == 7 and meta["rb.lookback"] == "24" and meta["rb.horizon"] == "12"


def test_validation_report_holds_every_figure_and_passes_on_the_cpu(pipeline_repo):
    repo, *_ = pipeline_repo
    report = json.loads((repo / "metrics/onnx/imdb-lstm.json").read_text())
    assert report["passed"] is True
    cpu = report["cpu"]
    assert cpu["status"] == "ok" and cpu["parity"] <= 1 and cpu["metric_delta"] <= cpu["metric_limit"]
    # each tolerance is in the record beside the figure it judges, and named by its setting
    assert (cpu["parity_rtol"], cpu["parity_atol"]) == (GATES.cpu.outputs.rtol, GATES.cpu.outputs.atol)
    assert cpu["parity_at"] in ("logits", "probabilities") and cpu["gates"] == "export.gates.cpu"
    assert cpu["metric_limit"] == pytest.approx(GATES.metric_rtol * cpu["torch_metric"])
    assert cpu["int8_metric_change_limit"] == GATES.int8["classifier"].limit
    for key in ("latency_ms_b1_p50", "latency_ms_b64_p50", "speedup_vs_torch_b1", "speedup_vs_torch_b64"):
        assert cpu[key] > 0
    assert cpu["provider"] == PROVIDERS["cpu"]
    cuda_runs = open_session(onnx_path(repo, "imdb-lstm"), PROVIDERS["cuda"])[0] is not None
    if cuda_runs:
        assert report["cuda"]["status"] == "ok" and report["cuda"]["provider"] == PROVIDERS["cuda"]
    else:  # onnxruntime's own reason, and no figure under the CUDA label
        assert report["cuda"] == {"status": "unavailable", "reason": report["cuda"]["reason"]}
        assert report["cuda"]["reason"].startswith(f"requested {PROVIDERS['cuda']}, but the session runs on "
                                                   f"['{PROVIDERS['cpu']}']")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA works here; the fallback cannot be observed")
def test_a_cuda_session_that_falls_back_to_the_cpu_is_reported_unavailable(pipeline_repo):
    repo, *_ = pipeline_repo
    session, reason = open_session(onnx_path(repo, "etth1-gru"), PROVIDERS["cuda"])
    assert session is None
    assert "CUDAExecutionProvider" in reason
    report = {"metric": "test/mse", "cpu": {"status": "ok", "parity": 0.0, "metric_delta": 0.0, "metric_limit": 1e-4,
                                            "metric_rtol": 1e-3},
              "cuda": {"status": "unavailable", "reason": reason}}
    assert failed_gates(report, ["CPUExecutionProvider"]) == []
    assert failed_gates(report, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        f"required provider CUDAExecutionProvider is unavailable: {reason}"]


def test_parity_check_catches_a_gru_exported_without_linear_before_reset(pipeline_repo, tmp_path):
    repo, *_ = pipeline_repo
    model = onnx.load(str(onnx_path(repo, "imdb-gru")))
    grus = [node for node in model.graph.node if node.op_type == "GRU"]
    assert grus and all(a.i == 1 for n in grus for a in n.attribute if a.name == "linear_before_reset")
    for node in grus:  # the known exporter bug: ONNX's default of 0 instead of PyTorch's 1
        for attribute in node.attribute:
            if attribute.name == "linear_before_reset":
                attribute.i = 0
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(model, str(corrupted))

    torch_model, model_args = load_checkpoint(repo / "models/imdb-gru/model.pt")
    meta = json.loads((repo / "data/prepared/imdb/data/meta.json").read_text())
    kind = kind_of(model_args["head"])
    inputs = kind.parity_inputs(model_args["args"], meta)
    good, _ = open_session(onnx_path(repo, "imdb-gru"), PROVIDERS["cpu"])
    bad, _ = open_session(corrupted, PROVIDERS["cpu"])
    cpu = torch.device("cpu")
    assert kind.parity(good, torch_model, inputs, cpu, GATES.cpu.outputs).worst <= 1
    assert kind.parity(bad, torch_model, inputs, cpu, GATES.cpu.outputs).worst > 1


class Scaled:
    """An onnxruntime session whose outputs are multiplied by `factor`."""

    def __init__(self, session, factor):
        self.session, self.factor = session, factor

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feeds):
        return [self.factor * out for out in self.session.run(names, feeds)]


class ScaledModel(torch.nn.Module):
    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.factor * self.model(x)


def test_the_parity_gate_judges_a_difference_at_its_outputs_scale(pipeline_repo, tmp_path):
    """The same forecaster with its outputs x1024 (a power of two: the scaling itself rounds
    nothing) gets the same verdict, where the old absolute gate (max |d| <= 1e-4) would fail it
    on rounding alone; a wrong export fails at any scale."""
    repo, *_ = pipeline_repo
    torch_model, model_args = load_checkpoint(repo / "models/etth1-lstm/model.pt")
    meta = json.loads((repo / "data/prepared/etth1/data/meta.json").read_text())
    kind, cpu, tolerance = kind_of(model_args["head"]), torch.device("cpu"), GATES.cpu.outputs
    inputs = kind.parity_inputs(model_args["args"], meta)
    session, _ = open_session(onnx_path(repo, "etth1-lstm"), PROVIDERS["cpu"])
    model = onnx.load(str(onnx_path(repo, "etth1-lstm")))
    weights = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                  key=lambda t: int(np.prod(t.dims)))   # the largest weight matrix, 2 % off: a wrong export
    weights.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weights) * 1.02, weights.name))
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    wrong_session, _ = open_session(tmp_path / "wrong.onnx", PROVIDERS["cpu"])
    verdicts = {}
    for name, session_ in (("right", session), ("wrong", wrong_session)):
        found = {factor: kind.parity(Scaled(session_, factor), ScaledModel(torch_model, factor), inputs, cpu, tolerance)
                 for factor in (1.0, 1024.0)}
        assert found[1024.0].worst == pytest.approx(found[1.0].worst, rel=1e-6)               # the same verdict
        assert found[1024.0].max_abs_diff == pytest.approx(1024 * found[1.0].max_abs_diff, rel=1e-6)  # an absolute gate's would move
        verdicts[name] = found[1.0].worst
    assert verdicts["right"] <= 1 < 10 < verdicts["wrong"]   # the wrong export fails far past any rounding


def test_scaled_error_is_the_allclose_form_at_the_references_own_scale():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(1000) * 3
    close = reference * (1 + 1e-5 * rng.standard_normal(1000))     # rounding-sized, relative
    far = reference + 0.1 * rng.standard_normal(1000)               # a wrong graph
    for factor in (1e-3, 1.0, 1e3):
        error = scaled_error(factor * close, factor * reference, 1e-3, 1e-3)
        assert error == pytest.approx(scaled_error(close, reference, 1e-3, 1e-3), rel=1e-6) and error < 0.1
        assert scaled_error(factor * far, factor * reference, 1e-3, 1e-3) > 1
    # near zero the absolute term (in units of the reference's rms) takes over
    assert scaled_error(np.array([1e-4, 1.0]), np.array([0.0, 1.0]), 1e-3, 1e-3) == pytest.approx(
        1e-4 / (1e-3 * np.sqrt(0.5)))
    assert scaled_error(np.zeros(3), np.zeros(3), 1e-3, 1e-3) == 0.0
    assert scaled_error(np.ones(3), np.zeros(3), 1e-3, 1e-3) == np.inf


def test_parity_inputs_cover_batch_one_odd_batches_padding_and_lengths():
    meta = {"max_len": 40, "pad_id": 0}
    shapes = [x.shape for x in kind_of("classifier").parity_inputs({"vocab_size": 50}, meta)]
    assert shapes[0][0] == 1 and any(b % 2 == 1 and b > 1 for b, _ in shapes)
    assert len({t for _, t in shapes}) == 3 and (2, 16) not in shapes
    padded = kind_of("classifier").parity_inputs({"vocab_size": 50}, meta)[2]
    assert (padded[1] == 0).any() and not (padded[0] == 0).any()


# ---- the deployment path ----------------------------------------------------------------------

NO_TORCH_RUNNER = """
import runpy, sys
sys.argv = ["predict", *sys.argv[1:]]
try:
    runpy.run_module("pipeline.deploy.predict", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("torch imported" if "torch" in sys.modules else "torch absent", file=sys.stderr)
print("training code imported" if "pipeline.stages.train" in sys.modules else "", file=sys.stderr)
sys.exit(code)
"""


def predict(repo, *args, env=None):
    return subprocess.run([sys.executable, "-c", NO_TORCH_RUNNER, *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def predict_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """pipeline.deploy.predict.main in this process (the error paths need no torch-free interpreter)."""
    from pipeline.deploy.predict import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_classifies_without_torch_and_agrees_with_pytorch(pipeline_repo):
    repo, *_ = pipeline_repo
    texts = ["A wonderful and superb film, I loved it.", "Boring, dull and awful. I hated it<br />really."]
    result = predict(repo, str(onnx_path(repo, "imdb-lstm")), "--text", texts[0], "--text", texts[1])
    assert result.returncode == 0, result.stderr
    assert "torch absent" in result.stderr and "training code imported" not in result.stderr
    predicted = [p["probabilities"]["pos"] for p in json.loads(result.stdout)["predictions"]]

    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(repo / "data/prepared/imdb/data/tokenizer.json"))
    ids = torch.tensor([e.ids for e in tokenizer.encode_batch(texts)])
    model, _ = load_checkpoint(repo / "models/imdb-lstm/model.pt")
    with torch.no_grad():
        expected = torch.softmax(model(ids), -1)[:, 1].numpy()
    assert np.allclose(predicted, expected, atol=1e-5)


def test_predict_takes_an_mlflow_model_uri(pipeline_repo):
    repo, *_ = pipeline_repo
    run_id = json.loads((repo / "models/imdb-gru/mlflow.json").read_text())["run_id"]
    direct = predict(repo, str(onnx_path(repo, "imdb-gru")), "--text", "superb film")
    via_mlflow = predict(repo, f"runs:/{run_id}/onnx-model", "--text", "superb film",
                         env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"})
    assert via_mlflow.returncode == 0, via_mlflow.stderr
    assert "torch absent" in via_mlflow.stderr
    assert json.loads(via_mlflow.stdout) == json.loads(direct.stdout)


def test_predict_says_which_provider_ran_and_never_passes_a_cpu_run_off_as_cuda(pipeline_repo, capsys):
    repo, *_ = pipeline_repo
    model = str(onnx_path(repo, "imdb-gru"))
    ran = PROVIDERS["cuda" if open_session(model, PROVIDERS["cuda"])[0] is not None else "cpu"]
    code, out, err = predict_in_process(capsys, model, "--text", "superb film")
    assert code == 0 and json.loads(out)["provider"] == ran and f"imdb-gru on {ran}" in err, err
    code, out, _ = predict_in_process(capsys, model, "--provider", "cpu", "--text", "superb film")
    assert json.loads(out)["provider"] == PROVIDERS["cpu"]
    code, out, err = predict_in_process(capsys, model, "--provider", "cuda", "--text", "superb film")
    if ran == PROVIDERS["cuda"]:
        assert code == 0 and json.loads(out)["provider"] == PROVIDERS["cuda"]
    else:
        assert code == 2 and out == "" and "--provider cuda: requested CUDAExecutionProvider" in err, err


def test_predict_lists_what_the_registry_holds_when_a_model_uri_names_nothing(pipeline_repo, capsys, monkeypatch):
    repo, *_ = pipeline_repo
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlflow.db")
    code, _, no_alias = predict_in_process(capsys, "models:/imdb@nonesuch", "--text", "superb film")
    assert code == 2 and "models:/imdb@nonesuch: " in no_alias and "model imdb has versions [1, 2]" in no_alias
    assert re.search(r"@champion -> version \d+ \((lstm|gru)\)", no_alias), no_alias
    code, _, no_model = predict_in_process(capsys, "models:/nonesuch@champion", "--text", "superb film")
    assert code == 2 and "registered models: " in no_model and "imdb" in no_model, no_model


def test_predict_forecasts_from_a_csv_slice_without_torch(pipeline_repo, tmp_path):
    repo, mirror, *_ = pipeline_repo
    lines = (mirror / "ETTh1.csv").read_text().splitlines()
    slice_path = tmp_path / "slice.csv"
    slice_path.write_text("\n".join(lines[:1] + lines[1:41]) + "\n")
    result = predict(repo, str(onnx_path(repo, "etth1-gru")), "--csv", str(slice_path))
    assert result.returncode == 0, result.stderr
    assert "torch absent" in result.stderr
    out = json.loads(result.stdout)["predictions"]
    assert out["horizon"] == 12 and len(out["forecast"]) == 12 and set(out["forecast"][0]) == set(out["columns"])
    assert out["after"] == lines[40].split(",")[0]


def test_predict_forecasts_a_whole_history_over_the_row_limit_from_its_last_lookback_rows(pipeline_repo, tmp_path):
    repo, mirror, *_ = pipeline_repo
    header, *rows = (mirror / "ETTh1.csv").read_text().splitlines()
    model = onnx_path(repo, "etth1-gru")
    limit = json.loads({p.key: p.value for p in onnx.load(str(model)).metadata_props}["rb.serve_limits"])["max_series_rows"]
    history = (rows * (limit // len(rows) + 2))[: limit + 1000]   # a user's whole file: over the served limit
    whole, tail = tmp_path / "history.csv", tmp_path / "tail.csv"
    whole.write_text("\n".join([header, *history]) + "\n")
    tail.write_text("\n".join([header, *history[-24:]]) + "\n")
    full, last = predict(repo, str(model), "--csv", str(whole)), predict(repo, str(model), "--csv", str(tail))
    assert full.returncode == 0 and last.returncode == 0, full.stderr
    assert json.loads(full.stdout)["predictions"] == json.loads(last.stdout)["predictions"]
    n = len(history)
    assert f"history.csv: forecasting from its last 24 of {n:,} data rows (lines {n - 22:,}-{n + 1:,})" in full.stderr


def test_predict_rejects_bad_input_clearly(pipeline_repo, tmp_path, capsys):
    repo, mirror, *_ = pipeline_repo
    imdb, etth1 = str(onnx_path(repo, "imdb-gru")), str(onnx_path(repo, "etth1-gru"))
    binary = tmp_path / "reviews.txt"
    binary.write_bytes(b"fine review\n\xff\xfe broken\n")
    short = tmp_path / "short.csv"
    short.write_text("\n".join((mirror / "ETTh1.csv").read_text().splitlines()[:6]) + "\n")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("date,a,b\n" + "2020-01-01,1,2\n" * 30)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), str(foreign), dynamo=False)
    cases = [
        ((imdb, "--text", "   "), "text #0 is empty"),
        ((imdb, "--file", str(binary)), "reviews.txt: not UTF-8 text"),
        ((etth1, "--csv", str(short)), "short.csv: 5 data rows, but the model looks back 24 rows"),
        ((etth1, "--csv", str(wrong)), "wrong.csv: column(s) ['HUFL', 'HULL'"),
        ((str(foreign), "--text", "hello"), "foreign.onnx: not a model exported by this project"),
        ((str(tmp_path / "missing.onnx"), "--text", "x"), "missing.onnx: no such ONNX file"),
    ]
    for args, message in cases:
        code, out, err = predict_in_process(capsys, *args)
        assert code == 2 and out == "", (args, err)
        assert err.startswith("predict: ") and message in err, (message, err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA works here, so the GPU profile passes")
def test_the_gpu_profile_fails_validation_where_cuda_cannot_run(pipeline_copy):
    repo, mirror, _ = pipeline_copy
    compose_params(repo, mirror, "export=gpu", "tracking.enabled=false")
    result = run_in(repo, sys.executable, "-m", "pipeline.stages.validate", "etth1", "gru", check=False)
    report = json.loads((repo / "metrics/onnx/etth1-gru.json").read_text())
    assert result.returncode == 1
    assert "required provider CUDAExecutionProvider is unavailable" in result.stderr
    assert report["passed"] is False and report["cpu"]["status"] == "ok"


# ---- the generator: a stateful graph ----------------------------------------------------------


@pytest.mark.parametrize("name, state", [("shakespeare-lstm", ["h", "c"]), ("shakespeare-gru", ["h"])])
def test_the_generator_graph_takes_and_returns_its_state_with_dynamic_batch_and_time(pipeline_repo, name, state):
    repo, *_ = pipeline_repo
    model = onnx.load(str(onnx_path(repo, name)))
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.input, *model.graph.output]}
    assert [i.name for i in model.graph.input] == ["input_ids", *state]
    assert [o.name for o in model.graph.output] == ["logits", *(f"{s}_out" for s in state)]
    assert shapes["input_ids"] == ["batch", "time"] and shapes["logits"][:2] == ["batch", "time"]
    assert all(shapes[s] == [2, "batch", 16] for s in state)  # [num_layers, batch, hidden_size]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["rb.state_inputs"]) == state and meta["rb.num_layers"] == "2"
    assert meta["rb.hidden_size"] == "16" and meta["rb.cell"] == name.split("-")[1]
    assert "".join(json.loads(meta["rb.vocab"])) == json.loads((repo / "metrics/data/shakespeare.json").read_text())["vocab"]


def test_generator_validation_holds_parity_test_loss_greedy_text_and_latency(pipeline_repo):
    repo, *_ = pipeline_repo
    report = json.loads((repo / "metrics/onnx/shakespeare-lstm.json").read_text())
    cpu = report["cpu"]
    assert report["passed"] and report["metric"] == "test/loss"
    assert cpu["parity"] <= 1 and cpu["state_parity"] <= 1 and cpu["metric_delta"] <= cpu["metric_limit"]
    assert cpu["parity_at"] == "log_probabilities" and cpu["state_parity_at"].startswith("state ")
    assert (cpu["state_parity_rtol"], cpu["state_parity_atol"]) == (GATES.cpu.states.rtol, GATES.cpu.states.atol)
    assert cpu["greedy_identical"] is True and cpu["greedy_chars"] == 300
    assert cpu["ms_per_char"] > 0 and cpu["prompt_chars_per_s"] > 0 and cpu["speedup_vs_torch_per_char"] > 0
    scores = json.loads((repo / "scores/onnx/shakespeare-lstm.json").read_text())
    assert scores == {"cpu_parity": pytest.approx(max(cpu["parity"], cpu["state_parity"]), rel=0.01),
                      "cpu_ms": pytest.approx(cpu["ms_per_char"], abs=5e-4),
                      "cpu_speedup": pytest.approx(cpu["speedup_vs_torch_per_char"], abs=5e-3)}


def test_predict_generates_without_torch_reproducibly_and_as_pytorch_does(pipeline_repo):
    repo, *_ = pipeline_repo
    model = str(onnx_path(repo, "shakespeare-lstm"))
    args = ("--prompt", "ROMEO:", "--max-chars", "80", "--temperature", "0.8", "--seed", "3")
    first, again = predict(repo, model, *args), predict(repo, model, *args)
    assert first.returncode == 0, first.stderr
    assert "torch absent" in first.stderr and "training code imported" not in first.stderr
    text = json.loads(first.stdout)["predictions"]["text"]
    assert len(text) == 80 and json.loads(again.stdout) == json.loads(first.stdout)
    other_seed = predict(repo, model, *args[:-1], "4")
    assert json.loads(other_seed.stdout)["predictions"]["text"] != text

    from pipeline.kinds.generator_spec import encode, generate
    from pipeline.kinds.generator import torch_step, zero_state
    greedy = predict(repo, model, "--prompt", "JULIET:", "--max-chars", "60", "--temperature", "0")
    torch_model, _ = load_checkpoint(repo / "models/shakespeare-lstm/model.pt")
    vocab = json.loads((repo / "data/prepared/shakespeare/data/meta.json").read_text())["vocab"]
    expected = generate(torch_step(torch_model, torch.device("cpu")), zero_state(torch_model)(1),
                        encode("JULIET:", vocab), 60, 0.0, 0)
    assert json.loads(greedy.stdout)["predictions"]["text"] == "".join(vocab[i] for i in expected)


def test_predict_generates_from_the_registry_through_an_mlflow_uri(pipeline_repo):
    repo, *_ = pipeline_repo
    run_id = json.loads((repo / "models/shakespeare-gru/mlflow.json").read_text())["run_id"]
    args = ("--prompt", "ROMEO:", "--max-chars", "30", "--seed", "1")
    direct = predict(repo, str(onnx_path(repo, "shakespeare-gru")), *args)
    via_mlflow = predict(repo, f"runs:/{run_id}/onnx-model", *args,
                         env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"})
    assert via_mlflow.returncode == 0, via_mlflow.stderr
    assert json.loads(via_mlflow.stdout) == json.loads(direct.stdout)


@pytest.mark.parametrize("args, message", [
    (("--prompt", ""), "a generator needs a non-empty --prompt"),
    (("--prompt", "ROMEO:", "--temperature", "-0.5"), "--temperature must be >= 0"),
    (("--prompt", "ROMEO:", "--max-chars", "0"), "--max-chars must be at least 1, found 0"),
    (("--prompt", "ROMEO~€"), "character(s) '~€' are not in the model's vocabulary"),
    (("--prompt", "ROMEO:", "--top-k", "0"), "--top-k must be at least 1"),
], ids=["empty-prompt", "negative-temperature", "no-characters", "unknown-characters", "top-k-zero"])
def test_predict_refuses_bad_generation_input_with_exit_code_2(pipeline_repo, args, message, capsys):
    repo, *_ = pipeline_repo
    code, out, err = predict_in_process(capsys, str(onnx_path(repo, "shakespeare-lstm")), *args)
    assert code == 2 and out == "" and err.startswith("predict: ") and message in err, err
