"""MLflow tracking, the pipeline's boundary with MLflow: every run, artifact, logged model and
registry change of the stages goes through here (the deployment path, pipeline.deploy.predict and the
served model, reads models through mlflow itself).

- Where: `tracking.uri` (sqlite:///mlflow.db at the repo root by default); the
  MLFLOW_TRACKING_URI environment variable wins over it.
- One experiment per task (`<prefix><task>`), one run per model, named after the model.
- Tags: git commit and dirty flag, the DVC stage, DVC_EXP_NAME when DVC sets it, and
  CUDA_VISIBLE_DEVICES when set (a queue worker pinned to a GPU).
- `tracking.enabled: false` gives a tracker that does nothing.
- Registry: one registered model per task, named after it; each validated model is a
  version tagged `model`, `cell`, `run_id` and `git.commit`, and the report points the
  aliases `champion` and `challenger` at the newest version of the first and second model.
- An unreachable tracking server is an error at start-up, before any training.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

from pipeline.config import TrackingConfig

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """The tracking backend cannot be used."""


def repo_root() -> Path:
    """The DVC repository's root. A queued `dvc exp run` works in a temporary copy that is
    deleted afterwards; DVC points DVC_ROOT at the real repository."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def resolve_uri(tracking: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI, else tracking.uri; a relative SQLite path is anchored at the repo root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(repo_root() / uri[len(prefix):])
    return uri


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_tags(cwd: str | Path = ".") -> dict[str, str]:
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit or "unknown",
            "git.dirty": "unknown" if status is None else str(bool(status)).lower()}


def served_model_tags(model: str, cell: str, run_id: str) -> dict[str, str]:
    """The tags of a registry version: which model and cell, the run that trained it, the commit."""
    return {"model": model, "cell": cell, "run_id": run_id, "git.commit": git_tags()["git.commit"]}


def run_tags(stage: str) -> dict[str, str]:
    tags = {**git_tags(), "dvc.stage": os.environ.get("DVC_STAGE", stage)}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # which GPU(s) a pinned queue worker had
        tags["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return tags


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast when a tracking server does not answer (local stores need no check)."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it, point "
            "MLFLOW_TRACKING_URI elsewhere, or set tracking.enabled=false") from None


class NullTracker:
    """Tracking switched off: every call does nothing."""

    run_id: str | None = None
    experiment_id: str | None = None
    uri: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_dataset(self, name: str, source: str, digest: str, context: str) -> None: ...
    def log_artifact(self, path: str | Path, folder: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_torch_model(self, model, input_example) -> None: ...
    def log_onnx_model(self, path: str | Path) -> None: ...
    def log_served_model(self, python_model, artifacts: Mapping[str, str], code_paths: list[str],
                         pip_requirements: list[str], registered_name: str,
                         version_tags: Mapping[str, str]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...

    def handoff(self) -> dict[str, str | None]:
        """What later stages need to add to the same run."""
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri}


class MlflowTracker(NullTracker):
    def __init__(self, uri: str, experiment: str, run_name: str, run_id: str | None = None):
        import mlflow

        check_reachable(uri)
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(experiment) is None:
            # Artifacts beside the store, not in the (possibly temporary) working copy.
            mlflow.create_experiment(experiment, artifact_location=(repo_root() / "mlruns" / experiment).as_uri())
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=run_name)
        self.run_id = run.info.run_id
        self._mlflow = mlflow

    def log_params(self, params):
        self._mlflow.log_params({k: str(v) for k, v in params.items()})  # one call

    def log_metrics(self, metrics, step=None):
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags):
        self._mlflow.set_tags(dict(tags))

    def log_dataset(self, name, source, digest, context):
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        source = LocalArtifactDatasetSource(Path(source).resolve().as_uri())
        dataset = MetaDataset(source, name=name, digest=digest[:36])
        self._mlflow.log_input(dataset, context=context)

    def log_artifact(self, path, folder=None):
        self._mlflow.log_artifact(str(path), artifact_path=folder)

    def log_text(self, text, artifact_file):
        self._mlflow.log_text(text, artifact_file)

    def log_torch_model(self, model, input_example):
        """The PyTorch model with a signature whose batch and time axes are dynamic.

        The tensors stay unnamed: MLflow's PyTorch flavour serves one plain array.
        """
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        with torch.no_grad():
            output = model(torch.from_numpy(input_example)).numpy()
        signature = ModelSignature(  # batch and time axes of the input are dynamic
            inputs=Schema([TensorSpec(input_example.dtype, (-1, -1, *input_example.shape[2:]))]),
            outputs=Schema([TensorSpec(np.dtype(output.dtype), (-1, *output.shape[1:]))]))
        self._mlflow.pytorch.log_model(
            model, name="pytorch-model", signature=signature, input_example=input_example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            serialization_format="pickle")  # an nn.Module: any batch and length, unlike a pt2 export

    def log_onnx_model(self, path):
        """The ONNX model, its signature read from the graph (dynamic axes stay -1)."""
        import numpy as np
        import onnxruntime
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        import onnx

        graph = onnx.load(str(path))

        def spec(value):
            tensor = value.type.tensor_type
            shape = tuple(d.dim_value if d.dim_value else -1 for d in tensor.shape.dim)
            return TensorSpec(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), shape, value.name)

        signature = ModelSignature(inputs=Schema([spec(v) for v in graph.graph.input]),
                                   outputs=Schema([spec(v) for v in graph.graph.output]))
        self._mlflow.onnx.log_model(graph, name="onnx-model", signature=signature,
                                    pip_requirements=[f"onnxruntime-gpu=={onnxruntime.__version__}"])

    def log_served_model(self, python_model, artifacts, code_paths, pip_requirements, registered_name,
                         version_tags):
        """A pyfunc model (`mlflow models serve` serves it; pipeline.deploy.serving.served_form gives its
        parts), logged as `served-model` and registered as a new version of `registered_name`,
        tagged with `version_tags`."""
        info = self._mlflow.pyfunc.log_model(
            name="served-model", python_model=python_model, artifacts=dict(artifacts), code_paths=code_paths,
            pip_requirements=pip_requirements, registered_model_name=registered_name)
        client = self._mlflow.MlflowClient()
        for key, value in version_tags.items():
            client.set_model_version_tag(registered_name, info.registered_model_version, key, value)
        log.info("registered %s version %s (%s)", registered_name, info.registered_model_version,
                 ", ".join(f"{k}={v}" for k, v in version_tags.items()))

    def end(self, status="FINISHED"):
        self._mlflow.end_run(status=status)


ALIASES = ("champion", "challenger")  # given in ranking order: the best model, the runner-up


def newest_by_model(versions) -> dict[str, str]:
    """{model tag: its newest version} over registered versions (a re-validated model has several)."""
    newest: dict[str, str] = {}
    for version in versions:
        model = version.tags.get("model")
        if model is not None and int(version.version) > int(newest.get(model, 0)):
            newest[model] = version.version
    return newest


def versions_of_runs(versions, run_ids: Mapping[str, str]) -> dict[str, str]:
    """{model: the version registered from the run `run_ids[model]`} (its `run_id` tag): the
    models the workspace's metrics describe, not whatever a sweep registered since."""
    found: dict[str, str] = {}
    for version in versions:
        model = version.tags.get("model")
        if model in run_ids and version.tags.get("run_id") == run_ids[model]:
            found[model] = version.version
    return found


def registry_set_aliases(tracking: TrackingConfig, task: str, ranked: list[str],
                         run_ids: Mapping[str, str] | None = None) -> None:
    """On the registered model `task`: `champion` on the version of the first model of `ranked`
    that has one, `challenger` on the second's; an alias with no model left is removed. With
    `run_ids` ({model: MLflow run}), a model's version is the one its run registered (a DVC
    experiment, a long-horizon sweep, registers versions of other settings); without, its newest."""
    if not tracking.enabled:
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(resolve_uri(tracking))
    versions = client.search_model_versions(f"name = '{task}'")
    newest = newest_by_model(versions) if run_ids is None else versions_of_runs(versions, run_ids)
    unregistered = [m for m in ranked if m not in newest]
    if unregistered:
        log.warning("registered model %s has no version of %s; left out of the aliases", task, unregistered)
    holders = [m for m in ranked if m in newest]
    for alias, model in zip(ALIASES, holders):
        client.set_registered_model_alias(task, alias, newest[model])
        log.info("%s of %s: %s (version %s)", alias, task, model, newest[model])
    for alias in ALIASES[len(holders):]:
        try:
            client.delete_registered_model_alias(task, alias)
        except MlflowException:
            pass  # it had no such alias (or the task no registered model yet)


def open_tracker(tracking: TrackingConfig, task: str, model: str, run_id: str | None = None) -> NullTracker:
    if not tracking.enabled:
        log.info("MLflow tracking is off (tracking.enabled=false)")
        return NullTracker()
    uri = resolve_uri(tracking)
    tracker = MlflowTracker(uri, f"{tracking.experiment_prefix}{task}", model, run_id)
    log.info("MLflow: %s, experiment %s%s, run %s", uri, tracking.experiment_prefix, task, tracker.run_id)
    return tracker
