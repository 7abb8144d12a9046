"""Stage `export@<task>-<model>`: the best checkpoint as a self-describing ONNX model.

    python -m pipeline.stages.export <task> <model>

- Named inputs and outputs, dynamic batch and time axes (each kind's `graph_interface` and
  `export_module`, pipeline/kinds/), an explicit opset, and the
  exporter chosen in config (`export.dynamo`; the TorchScript exporter by default: it
  takes well under a second here, where the dynamo exporter took over a minute).
- metadata_props carry what a deployer needs: task, model, labels, the tokenizer (inline,
  with its sha256), padding id and maximum length, or the normalisation statistics,
  columns, lookback and horizon, or a generator's vocabulary and state layout; plus the git
  commit and the test metrics.
- A generator's graph is stateful: `input_ids [batch, time]` and the recurrent state in
  (`h`, and `c` for an LSTM, each [num_layers, batch, hidden_size]), `logits [batch, time,
  vocab]` and the new state out (`h_out`, `c_out`). Batch and time are dynamic, so one
  graph reads a prompt in one call and then decodes one character per call.
- Recurrent layers are onnxruntime's fused `LSTM`/`GRU` nodes (the peephole LSTM's carry
  the `P` input), one per layer. A bidirectional classifier layer is one node with
  direction="bidirectional" and `sequence_lens` (int32, counted from `input_ids` in the
  graph), which reverses each row within its own length as pipeline/nets/backbone.py masks it;
  the forecaster and generator layers are one direction each.
- onnx.checker (full check) and strict shape inference must pass (pipeline/onnx_files.py).
"""

from __future__ import annotations

import json
import logging
import sys

from pipeline.training.checkpoints import load_trained
from pipeline.config import Config, ConfigError, load_task, stage_args
from pipeline.files import write_json_atomic
from pipeline.kinds.registry import kind_of
from pipeline.layout import METADATA_PREFIX, int8_model, run_name
from pipeline.onnx_files import export_onnx, int8_beside
from pipeline.tracking import git_tags

log = logging.getLogger(__name__)


def deployment_metadata(config: Config, task_name: str, model_name: str, kind, meta: dict,
                        test_metrics: dict) -> dict[str, str]:
    """What every model carries (task, model, head, cell, commit, test metrics, session settings,
    request limits), then the kind's own (`kind.deployment_metadata`), under METADATA_PREFIX."""
    task, model = config.task[task_name], config.model[model_name]
    props = {"task": task_name, "model": model_name, "head": task.head, "cell": model.cell,
             "git_commit": git_tags()["git.commit"], "test_metrics": json.dumps(test_metrics),
             "session_settings": json.dumps(config.export.session.model_dump()),  # predict's SessionOptions
             "serve_limits": json.dumps(config.serve.limits.model_dump()),  # checked by predict and serving
             **kind.deployment_metadata(task, model.settings(task.head), model.cell, meta)}
    return {METADATA_PREFIX + key: value for key, value in props.items()}


def main(argv: list[str] | None = None) -> int:
    task_name, model_name = stage_args("pipeline.stages.export", ["task", "model"], argv)
    name = run_name(task_name, model_name)
    try:
        config, _ = load_task(task_name)
        trained = load_trained(config, task_name, model_name)
        kind = kind_of(trained.head)
        interface = kind.graph_interface(trained.model_args["args"], trained.meta)
        metadata = deployment_metadata(config, task_name, model_name, kind, trained.meta, trained.test_metrics)
        seconds = export_onnx(kind.export_module(trained.model), interface, trained.paths.onnx_model,
                              config.export.opset, config.export.dynamo, metadata)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"export@{name}: {exc}", file=sys.stderr)
        return 1
    onnx_model = trained.paths.onnx_model
    int8 = int8_beside(onnx_model, config.export.int8)
    write_json_atomic(trained.paths.export_info, {
        "export/seconds": round(seconds, 3), "opset": config.export.opset, "dynamo": config.export.dynamo,
        "inputs": interface["inputs"], "outputs": interface["outputs"], "bytes": onnx_model.stat().st_size,
        "int8": int8})
    if int8:
        log.info("export@%s: INT8 %s, %d bytes, quantised nodes %s, fp32 recurrent nodes %s", name,
                 int8_model(onnx_model), int8["bytes"], int8["quantised_nodes"], int8["fp32_recurrent_nodes"] or "none")
    log.info("export@%s: %s in %.2fs (opset %d, %s exporter)", name, onnx_model, seconds,
             config.export.opset, "dynamo" if config.export.dynamo else "TorchScript")
    return 0


if __name__ == "__main__":
    sys.exit(main())
