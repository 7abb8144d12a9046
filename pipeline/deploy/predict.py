"""Deployment path: onnxruntime, numpy and the tokenizer only. Never torch, never training code.

    python -m pipeline.deploy.predict onnx/imdb-gru/model.onnx --text "A wonderful film." --text "Dull."
    python -m pipeline.deploy.predict onnx/imdb-gru/model.onnx --file reviews.txt      # one review per line
    python -m pipeline.deploy.predict onnx/etth1-lstm/model.onnx --csv history.csv      # its last L rows
    python -m pipeline.deploy.predict models:/imdb@champion --text "..."                # an MLflow model URI
    python -m pipeline.deploy.predict onnx/shakespeare-lstm/model.onnx --prompt "ROMEO:" --max-chars 500 \
        --temperature 0.8 --seed 0                                                # generate text
    python -m pipeline.deploy.predict ... --provider cuda                                # auto (default) | cpu | cuda
    python -m pipeline.deploy.predict onnx/etth1-lstm/model.onnx --int8 --csv ...       # model.int8.onnx beside it
    python -m pipeline.deploy.predict ... --no-limits                                    # lift the request limits

Everything needed to prepare the input comes from the model's own metadata_props (written
by pipeline.stages.export): the tokenizer (inline, checked against its sha256) with its padding
and truncation, or the normalisation statistics, columns, lookback and horizon, or a
generator's vocabulary and state layout. The output is JSON on stdout: class probabilities
per text, the forecast per step and column in the data's own units, or the generated text.

Generation reads the prompt in one call of the stateful graph, then decodes one character
per call, carrying the state. Sampling is seeded (numpy), so the same seed gives the same
text; `--temperature 0` is greedy, and `--top-k K` keeps the K likeliest characters. A
prompt character outside the model's vocabulary is an error (the vocabulary has no
[UNK]).

`--provider auto` runs on CUDA when onnxruntime's CUDA provider really loads, and on the CPU
otherwise; `cpu` and `cuda` ask for one, and `cuda` fails where CUDA cannot run. Which provider
ran is read back from the session (onnxruntime-gpu falls back to the CPU silently), printed on
stderr and put in the JSON, so a CPU run never passes for CUDA.

onnxruntime's SessionOptions come from the model too (`session_settings`, the config's
export.session): the `latency` ones for one row, the `throughput` ones for several texts.
`--int8` runs the dynamically quantised model.int8.onnx that pipeline.stages.export writes beside
model.onnx; it is an error (exit 2) when there is none.

The model's request limits (conf/serve: reviews per request, characters per review, prompt
and generated characters; stamped in at export) are checked on the input's sizes before any
work, as the served model checks them; `--no-limits` lifts them here. A forecaster's CSV is not
limited in rows: it is streamed and only its last `lookback` rows are kept (stderr says which),
so a whole history forecasts from its end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.kinds.specs import known, known_heads, spec_of
from pipeline.layout import METADATA_PREFIX as PREFIX
from pipeline.layout import int8_model
from pipeline.deploy.limits import LimitError, PredictError, limits_of, within  # noqa: F401  (predict's errors)
from pipeline.deploy.sessions import PROVIDERS, open_session

INT8_SUFFIX = int8_model("model.onnx").name[len("model"):]  # ".int8.onnx"


def resolve_model(source: str, int8: bool = False) -> Path:
    """An .onnx path, or an MLflow model URI downloaded to a local folder; with `int8`, the
    model.int8.onnx beside the path (pipeline.stages.export writes it), or the *.int8.onnx in the folder."""
    if "://" in source or source.startswith("models:/") or source.startswith("runs:/"):
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
        except MlflowException as exc:
            raise PredictError(f"{source}: {exc.message.splitlines()[0]} {registry_contents(source)}") from None
        found = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
        found = [f for f in found if f.name.endswith(INT8_SUFFIX) == int8]  # the fp32 or the INT8 one
        if int8 and not found:
            raise PredictError(f"{source}: --int8, but the downloaded model ({local}) holds no *{INT8_SUFFIX} file; "
                               "drop --int8, or log the INT8 model that pipeline.stages.export writes beside the fp32 one")
        if len(found) != 1:  # a served (pyfunc) model holds its one ONNX file under artifacts/
            raise PredictError(f"{source}: expected one .onnx file in the downloaded model ({local}), "
                               f"found {len(found)}: {[str(f.relative_to(local)) for f in found]}")
        return found[0]
    path = Path(source)
    if not path.is_file():
        raise PredictError(f"{source}: no such ONNX file")
    if int8 and not path.name.endswith(INT8_SUFFIX):
        path = int8_model(path)
        if not path.is_file():
            raise PredictError(f"--int8: {path} not found beside {source}; produce it with "
                               "`python -m pipeline.stages.export <task> <model>` (export.int8: true, the default)")
    return path


def registry_contents(uri: str) -> str:
    """What the registry does hold, for an error about a `models:/` URI that names nothing."""
    if not uri.startswith("models:/"):
        return ""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name = uri[len("models:/"):].split("@")[0].split("/")[0]
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        return f"(registered models: {', '.join(names) or 'none'}; tracking URI {client.tracking_uri})"
    found = {v.version: v.tags.get("model") for v in client.search_model_versions(f"name='{name}'")}
    versions = sorted(int(v) for v in found)
    aliases = ", ".join(f"@{alias} -> version {version}" + (f" ({found[version]})" if found.get(version) else "")
                        for alias, version in sorted(model.aliases.items()))
    return f"(model {name} has versions {versions} and aliases: {aliases or 'none'})"


def start_session(path: Path, provider: str):
    """The session on the chosen provider (`session.get_providers()[0]` is the one that runs it):
    `auto` takes CUDA only when it really loads."""
    if provider in ("auto", "cuda"):
        session, reason = open_session(path, PROVIDERS["cuda"])
        if session is not None:
            return session
        if provider == "cuda":
            raise PredictError(f"--provider cuda: {reason}; use --provider cpu or auto")
        print(f"predict: CUDA unavailable ({reason}); running on the CPU", file=sys.stderr)
    session, reason = open_session(path, PROVIDERS["cpu"])
    if session is None:
        raise PredictError(f"{path}: not a loadable ONNX model ({reason})")
    return session


def open_model(path: Path, provider: str = "auto"):
    """(session, metadata) for a model of this project; anything else is refused clearly."""
    session = start_session(path, provider)
    props = session.get_modelmeta().custom_metadata_map
    meta = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
    missing = [k for k in ("task", "head") if k not in meta]
    if missing:
        raise PredictError(f"{path}: not a model exported by this project (metadata {PREFIX}{missing[0]} "
                           "missing); export it with `python -m pipeline.stages.export`")
    if not known(meta["head"]):
        raise PredictError(f"{path}: a model of head {meta['head']!r}, which this deployment path does not know "
                           f"(it knows {known_heads()}); update the code to the commit that exported it")
    print(f"predict: {meta['task']}-{meta['model']} on {session.get_providers()[0]}", file=sys.stderr)
    return session, meta


def workload_session(session, path: Path, meta: dict, rows: int):
    """The session with the SessionOptions the model carries (`session_settings`, from the
    config's export.session): `latency` for one row (a forecast, one text, each generated
    character), `throughput` for several texts. Re-opening costs one more load of the model,
    so it happens only when those settings differ from onnxruntime's defaults (0 threads)."""
    workload = "latency" if rows == 1 else "throughput"
    settings = json.loads(meta.get("session_settings", "{}")).get(workload) or {}
    if not any(settings.values()):
        return session
    tuned, reason = open_session(path, session.get_providers()[0], settings)
    if tuned is None:  # cannot happen for a provider that just ran the model; keep that session
        print(f"predict: {workload} settings {settings} not applied ({reason})", file=sys.stderr)
        return session
    return tuned


# ---- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an .onnx file or an MLflow model URI (models:/name@alias, runs:/...)")
    parser.add_argument("--text", action="append", help="a review to classify (repeatable)")
    parser.add_argument("--file", help="a UTF-8 file of reviews, one per line")
    parser.add_argument("--csv", help="a CSV with the model's columns, of any length; its last L rows are used")
    parser.add_argument("--tokenizer", help="a tokenizer.json to use instead of the one inside the model")
    parser.add_argument("--prompt", help="generator: the text to continue")
    # The generator's sampling defaults are its own (generator_spec.SAMPLING), filled in by its spec.
    parser.add_argument("--max-chars", type=int, help="generator: characters to generate (default: generator_spec.SAMPLING's)")
    parser.add_argument("--temperature", type=float, help="generator: 0 = greedy (default: SAMPLING's)")
    parser.add_argument("--seed", type=int, help="generator: the sampling seed (default: SAMPLING's)")
    parser.add_argument("--top-k", type=int, help="generator: sample among the K likeliest characters only")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto",
                        help="execution provider: auto = CUDA when it really loads, else the CPU")
    parser.add_argument("--int8", action="store_true",
                        help="run model.int8.onnx beside the given model (the *.int8.onnx of an MLflow model)")
    parser.add_argument("--no-limits", action="store_true",
                        help="lift the model's request limits (serve.limits: reviews, characters, rows) on this machine")
    args = parser.parse_args(argv)
    try:
        path = resolve_model(args.model, args.int8)
        session, meta = open_model(path, args.provider)
        limits = None if args.no_limits else limits_of(meta)
        if limits is None and not args.no_limits:
            print("predict: the model carries no request limits (exported before they existed); none applied",
                  file=sys.stderr)
        spec = spec_of(meta["head"])   # what the model's kind reads from the command line, and answers
        inputs = spec.from_cli(args, meta, limits)
        session = workload_session(session, path, meta, rows=spec.rows(inputs))
        result = spec.answer(session, meta, inputs, spec.context(meta, args.tokenizer))
    except PredictError as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    json.dump({"task": meta["task"], "model": meta["model"], "provider": session.get_providers()[0],
               "predictions": result}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
