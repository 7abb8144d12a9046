"""INT8: onnxruntime's dynamic quantisation of the exported models (export.int8), what it does
to each recurrent cell, the test-metric gate that validate holds it to, and `predict --int8`."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.deploy import predict
from pipeline.config import load_config
from pipeline.kinds.base import int8_gate
from pipeline.kinds import SETTINGS
from pipeline.kinds.registry import kind_of
from pipeline.onnx_files import export_onnx, int8_beside, quantise_int8
from pipeline.layout import int8_model
from pipeline.nets.classifier import SequenceClassifier
from pipeline.nets.forecaster import Forecaster
from pipeline.stages.validate import gate_problems, headline
from tests.conftest import REPO_ROOT

FORECASTER = {"n_channels": 3, "horizon": 4, "hidden_size": 32, "num_layers": 1, "dropout": 0.0, "revin": True,
              "segment_len": 4, "channel_independent": True}
METADATA = {"rb.task": "etth1", "rb.model": "tiny", "rb.head": "forecaster", "rb.lookback": "16"}


def exported_forecaster(tmp_path, cell: str):
    torch.manual_seed(0)
    model = Forecaster(cell=cell, **FORECASTER).eval()
    interface = kind_of("forecaster").graph_interface(FORECASTER, {"lookback": 16})
    path = tmp_path / cell / "model.onnx"
    path.parent.mkdir()
    export_onnx(kind_of("forecaster").export_module(model), interface, path, 17, False, METADATA)
    return model, path


def ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_export_without_int8_leaves_no_int8_model_from_an_earlier_export(tmp_path):
    _, path = exported_forecaster(tmp_path, "lstm")
    assert int8_beside(path, True)["bytes"] > 0 and int8_model(path).is_file()
    assert int8_beside(path, False) is None
    assert not int8_model(path).exists() and path.is_file()


@pytest.mark.parametrize("cell", ["lstm", "lstm_peephole"])
def test_an_lstm_becomes_dynamic_quantize_lstm_beside_the_fp32_model_with_its_metadata(tmp_path, cell):
    model, path = exported_forecaster(tmp_path, cell)
    info = quantise_int8(path, int8_model(path))
    quantised = int8_model(path)
    assert quantised == path.parent / "model.int8.onnx" and quantised.is_file()
    found = ops(quantised)
    assert found["DynamicQuantizeLSTM"] == 1 and found["LSTM"] == 0
    assert info["quantised_nodes"]["DynamicQuantizeLSTM"] == 1 and info["fp32_recurrent_nodes"] == {}
    assert info["bytes"] == quantised.stat().st_size < path.stat().st_size
    props = {p.key: p.value for p in onnx.load(str(quantised)).metadata_props}
    assert {k: props.get(k) for k in METADATA} == METADATA
    x = np.random.default_rng(0).standard_normal((5, 16, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(run(quantised, x) - expected).max() < 0.05 * np.abs(expected).max()   # close, not exact


def test_the_peephole_input_p_survives_quantisation(tmp_path):
    _, path = exported_forecaster(tmp_path, "lstm_peephole")
    quantise_int8(path, int8_model(path))
    fp32_p = next(n.input[7] for n in onnx.load(str(path)).graph.node if n.op_type == "LSTM")
    node = next(n for n in onnx.load(str(int8_model(path))).graph.node if n.op_type == "DynamicQuantizeLSTM")
    assert fp32_p and node.input[7] == fp32_p       # DynamicQuantizeLSTM's 8th input is P, as in LSTM


def test_a_gru_stays_an_fp32_gru_node_and_only_the_matmuls_around_it_are_quantised(tmp_path):
    _, path = exported_forecaster(tmp_path, "gru")
    info = quantise_int8(path, int8_model(path))
    found = ops(int8_model(path))
    assert found["GRU"] == 1 and info["fp32_recurrent_nodes"] == {"GRU": 1}
    assert not any("GRU" in op and op != "GRU" for op in found)   # onnxruntime has no quantised GRU kernel
    assert found["MatMulInteger"] >= 1
    gru_weights = {i for n in onnx.load(str(int8_model(path))).graph.node if n.op_type == "GRU" for i in n.input[1:3]}
    initialisers = {t.name: t for t in onnx.load(str(int8_model(path))).graph.initializer}
    assert all(initialisers[name].data_type == onnx.TensorProto.FLOAT for name in gru_weights)


def test_a_bidirectional_two_layer_classifier_quantises_both_directions_of_every_layer(tmp_path):
    torch.manual_seed(1)
    model = SequenceClassifier(vocab_size=40, num_classes=2, cell="lstm", embedding_dim=8, hidden_size=16,
                               num_layers=2, bidirectional=True, dropout=0.0, embedding_dropout=0.0,
                               pooling=["mean", "max"], pad_id=0).eval()
    args = {"vocab_size": 40}
    interface = kind_of("classifier").graph_interface(args, {"pad_id": 0})
    path = tmp_path / "model.onnx"
    export_onnx(kind_of("classifier").export_module(model), interface, path, 17, False, {"rb.head": "classifier"})
    lstm_nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "LSTM"]
    quantise_int8(path, int8_model(path))
    nodes = [n for n in onnx.load(str(int8_model(path))).graph.node if n.op_type == "DynamicQuantizeLSTM"]
    assert len(nodes) == len(lstm_nodes) >= 2
    direction = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get("direction") for n in nodes]
    assert direction == [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get("direction")
                         for n in lstm_nodes]
    ids = np.random.default_rng(1).integers(1, 40, (6, 20)).astype(np.int64)
    ids[1, 12:] = 0
    assert (run(int8_model(path), ids).argmax(1) == run(path, ids).argmax(1)).mean() >= 5 / 6


# ---- the gate ---------------------------------------------------------------------------------


RULES = load_config(REPO_ROOT / "params.yaml").export.gates.int8   # export.gates.int8


def test_every_task_metric_has_an_int8_gate_and_accuracy_is_absolute_while_mse_and_loss_are_relative():
    assert set(RULES) == set(SETTINGS)
    assert {head: (rule.change, rule.limit) for head, rule in RULES.items()} == {
        "classifier": ("absolute", 0.003), "forecaster": ("relative", 0.01), "generator": ("relative", 0.01)}
    assert int8_gate(0.8725, 0.8750, RULES["classifier"])["int8_metric_change"] == pytest.approx(0.0025)
    assert int8_gate(0.404, 0.400, RULES["forecaster"])["int8_metric_change"] == pytest.approx(0.01)
    assert int8_gate(1.50, 1.52, RULES["generator"]) == {"int8_metric": 1.50, "int8_metric_change": pytest.approx(0.02 / 1.52),
                                                         "int8_metric_change_limit": 0.01, "int8_gate": "relative"}
    # relative: the same 0.0025 that passes on accuracy fails on a loss of 0.2
    assert int8_gate(0.2025, 0.2, RULES["generator"])["int8_metric_change"] == pytest.approx(0.0125)


def test_a_run_whose_head_has_no_int8_rule_is_refused_naming_the_setting():
    from pipeline.config import ConfigError, validate
    from pipeline.compose import compose

    container = compose(["~export.gates.int8.forecaster"])
    with pytest.raises(ConfigError, match=r"export\.gates\.int8\.forecaster: required, since export\.int8 is true"):
        validate(container)
    validate(compose(["~export.gates.int8.forecaster", "export.int8=false"]))   # no INT8 model, no rule needed


def fp32_result(**int8) -> dict:
    return {"parity": 1e-2, "metric_delta": 0.0, "metric_limit": 8.75e-4, "metric_rtol": 1e-3, "onnx_metric": 0.875,
            **int8}


@pytest.mark.parametrize("int8_metric, fails", [(0.873, False), (0.871, True), (0.879, True)])
def test_the_int8_gate_fails_when_the_test_metric_moves_more_than_its_limit_either_way(int8_metric, fails):
    problems = gate_problems("CPUExecutionProvider", fp32_result(**int8_gate(int8_metric, 0.875, RULES["classifier"])))
    assert bool(problems) is fails
    if fails:
        assert "INT8" in problems[0] and "fp32 ONNX" in problems[0] and "0.003" in problems[0]


@pytest.mark.parametrize("n, differ, int8_metric, fails", [
    (500, 4, 0.869, False),       # 0.006 on 500 texts: 3 net flips of 4, within 1.96 sqrt(4) / 500 = 0.0078
    (500, 4, 0.867, True),        # 0.008: beyond both
    (25000, 100, 0.871, True),    # IMDB's size: 1.96 sqrt(100) / 25000 = 0.0008, so the 0.003 limit holds
    (25000, 100, 0.8725, False),
])
def test_a_change_the_test_set_cannot_tell_from_chance_passes_and_a_large_test_set_keeps_the_limit(
        n, differ, int8_metric, fails):
    from pipeline.kinds.registry import kind_of

    fp32 = np.zeros((n, 2), np.float32)
    int8 = fp32.copy()
    int8[:differ, 1] = 1.0   # argmax moves from class 0 to class 1 on `differ` texts
    noise = kind_of("classifier").paired_noise([(fp32, None)], [(int8, None)])
    assert noise == pytest.approx(np.sqrt(differ) / n)
    record = int8_gate(int8_metric, 0.875, RULES["classifier"], noise)
    assert record["int8_metric_change_limit"] == pytest.approx(max(0.003, 1.96 * noise))
    assert bool(gate_problems("CPUExecutionProvider", fp32_result(**record))) is fails


def test_no_int8_entries_means_no_int8_gate():
    assert gate_problems("CPUExecutionProvider", fp32_result()) == []


def test_the_int8_figures_stay_out_of_the_dvc_headline_which_keeps_its_three_columns_per_provider():
    report = {"cpu": {"status": "ok", **fp32_result(), "latency_ms_b1_p50": 1.0, "speedup_vs_torch_b1": 2.0,
                      "int8_speedup_vs_fp32_b1": 1.234, **int8_gate(0.874, 0.875, RULES["classifier"])},
              "cuda": {"status": "unavailable"}}
    assert sorted(headline(report, kind_of("forecaster"))) == ["cpu_ms", "cpu_parity", "cpu_speedup"]


# ---- predict --int8 -------------------------------------------------------------------------------


def test_predict_int8_without_the_int8_model_exits_2_naming_the_path_and_how_to_make_it(tmp_path, capsys):
    _, path = exported_forecaster(tmp_path, "lstm")
    assert predict.main([str(path), "--int8", "--csv", "unused.csv"]) == 2
    err = capsys.readouterr().err
    assert str(int8_model(path)) in err and "python -m pipeline.stages.export" in err


def test_predict_int8_picks_the_model_beside_the_given_one(tmp_path):
    _, path = exported_forecaster(tmp_path, "lstm")
    quantise_int8(path, int8_model(path))
    assert predict.resolve_model(str(path), int8=True) == int8_model(path)
    assert predict.resolve_model(str(path)) == path


@pytest.mark.parametrize("int8, files, chosen", [
    (True, ["model.onnx", "model.int8.onnx"], "model.int8.onnx"),
    (False, ["model.onnx", "model.int8.onnx"], "model.onnx"),   # sorted, model.int8.onnx would come first
    (True, ["model.onnx"], None),
])
def test_predict_int8_on_an_mlflow_uri_takes_the_int8_file_of_the_download(tmp_path, monkeypatch, int8, files, chosen):
    import mlflow.artifacts

    for name in files:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda artifact_uri: str(tmp_path))
    if chosen:
        assert predict.resolve_model("runs:/abc/onnx-model", int8=int8) == tmp_path / chosen
    else:
        with pytest.raises(predict.PredictError, match=r"--int8.*no \*\.int8\.onnx"):
            predict.resolve_model("runs:/abc/onnx-model", int8=int8)


# ---- end to end (the fixture pipeline) --------------------------------------------------------


@pytest.mark.parametrize("name", ["imdb-lstm", "etth1-gru", "shakespeare-lstm"])
def test_validate_records_and_gates_the_int8_model_of_every_run(pipeline_repo, name):
    repo, *_ = pipeline_repo
    assert int8_model(repo / "onnx" / name / "model.onnx").is_file()
    export_info = json.loads((repo / "onnx" / name / "export.json").read_text())
    assert export_info["int8"]["bytes"] > 0
    cpu = json.loads((repo / "metrics/onnx" / f"{name}.json").read_text())["cpu"]
    latency = ["int8_ms_per_char", "int8_speedup_vs_torch_per_char", "int8_speedup_vs_fp32_per_char"] \
        if name.startswith("shakespeare") else \
        [f"int8_{k}_b{b}" for k in ("speedup_vs_torch", "speedup_vs_fp32") for b in (1, 64)] + \
        ["int8_latency_ms_b1_p50", "int8_latency_ms_b64_p50"]
    for key in ["int8_bytes", "int8_metric", *latency]:
        assert cpu[key] > 0, key
    assert cpu["int8_metric_change"] <= cpu["int8_metric_change_limit"] and cpu["gates_passed"] is True
    scores = json.loads((repo / "scores/onnx" / f"{name}.json").read_text())
    assert [k for k in scores if "int8" in k] == []   # the full record holds them; the DVC table stays narrow


def test_predict_int8_forecasts_without_torch(pipeline_repo, tmp_path):
    from tests.test_onnx import predict as run_predict

    repo, mirror, *_ = pipeline_repo
    csv_rows = (mirror / "ETTh1.csv").read_text().splitlines()
    window = tmp_path / "window.csv"
    window.write_text("\n".join([csv_rows[0], *csv_rows[1:41]]) + "\n")
    fp32 = run_predict(repo, str(repo / "onnx/etth1-lstm/model.onnx"), "--csv", str(window))
    int8 = run_predict(repo, str(repo / "onnx/etth1-lstm/model.onnx"), "--int8", "--csv", str(window))
    assert int8.returncode == 0, int8.stderr
    assert "torch absent" in int8.stderr
    a, b = (json.loads(r.stdout)["predictions"]["forecast"] for r in (fp32, int8))
    assert len(a) == len(b) == 12 and a != b      # the quantised model, not the fp32 one
