"""onnxruntime SessionOptions by workload: the config's export.session, the names sessions.py
maps to onnxruntime, the sessions validate times with, and predict's choice by row count."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.deploy import predict
from pipeline.config import ConfigError, validate
from pipeline.compose import compose
from pipeline.latency import WORKLOAD_OF_BATCH
from pipeline.deploy.sessions import PROVIDERS, open_session, open_workloads, session_options


def test_settings_by_name_become_onnxruntime_session_options():
    options = session_options({"intra_op_num_threads": 1, "inter_op_num_threads": 2, "execution_mode": "parallel",
                               "graph_optimization_level": "basic"})
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    default = session_options(None)
    assert default.intra_op_num_threads == 0 and default.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_an_unknown_setting_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['intra_threads'\]"):
        session_options({"intra_threads": 1})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), str(path), input_names=["x"], opset_version=17,
                      dynamo=False)
    return path


def test_a_session_opened_with_settings_runs_with_them(tiny_model):
    session, reason = open_session(tiny_model, PROVIDERS["cpu"], {"intra_op_num_threads": 1})
    assert reason is None
    assert session.get_session_options().intra_op_num_threads == 1


def test_the_config_has_a_thread_count_per_workload_and_validate_opens_one_session_for_each(tiny_model):
    config = validate(compose(["export.session.latency.intra_op_num_threads=1",
                               "export.session.throughput.intra_op_num_threads=2"]))
    sessions, reason = open_workloads(tiny_model, PROVIDERS["cpu"], config.export.session)
    assert reason is None
    threads = {w: s.get_session_options().intra_op_num_threads for w, s in sessions.items()}
    assert threads == {"latency": 1, "throughput": 2}
    assert WORKLOAD_OF_BATCH == {1: "latency", 64: "throughput"}


def test_workloads_with_equal_settings_share_one_session_so_validate_loads_the_model_once(tiny_model):
    config = validate(compose([]))   # both workloads: onnxruntime's defaults
    sessions, reason = open_workloads(tiny_model, PROVIDERS["cpu"], config.export.session)
    assert reason is None and sessions["latency"] is sessions["throughput"]


@pytest.mark.parametrize("override, key, allowed", [
    ("export.session.latency.intra_op_num_threads=-1", "export.session.latency.intra_op_num_threads",
     "greater than or equal to 0"),
    ("export.session.throughput.intra_op_num_threads=two", "export.session.throughput.intra_op_num_threads",
     "valid integer"),
    ("+export.session.latency.execution_mode=parallel", "export.session.latency.execution_mode", "unknown key"),
    ("+export.session.batch8={intra_op_num_threads:1}", "export.session.batch8", "unknown key"),
    ("export.int8=yes", "export.int8", "valid boolean"),
    ("~export.int8", "export.int8", "required key is missing"),
])
def test_bad_session_or_int8_settings_fail_naming_the_key(override, key, allowed):
    with pytest.raises(ConfigError) as caught:
        validate(compose([override]))
    message = str(caught.value)
    assert f"{key}:" in message and allowed in message, message


def stamped(path, settings: dict):
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"rb.session_settings": json.dumps(settings)})
    out = path.with_name("stamped.onnx")
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("rows, threads", [(1, 1), (7, 2)])
def test_predict_takes_the_latency_settings_for_one_row_and_the_throughput_ones_for_several(tiny_model, rows,
                                                                                             threads):
    path = stamped(tiny_model, {"latency": {"intra_op_num_threads": 1}, "throughput": {"intra_op_num_threads": 2}})
    first, _ = open_session(path, PROVIDERS["cpu"])
    meta = {"session_settings": first.get_modelmeta().custom_metadata_map["rb.session_settings"]}
    tuned = predict.workload_session(first, path, meta, rows)
    assert tuned.get_session_options().intra_op_num_threads == threads


def test_predict_keeps_its_first_session_when_the_settings_are_onnxruntimes_defaults(tiny_model):
    first, _ = open_session(tiny_model, PROVIDERS["cpu"])
    meta = {"session_settings": json.dumps({"latency": {"intra_op_num_threads": 0},
                                            "throughput": {"intra_op_num_threads": 0}})}
    assert predict.workload_session(first, tiny_model, meta, 1) is first
    assert predict.workload_session(first, tiny_model, {}, 5) is first   # a model exported before the settings
