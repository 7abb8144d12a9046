"""The champions in the browser: a static site that runs each task's registered champion in the
reader's own browser on onnxruntime-web, built from what `dvc repro` left.

    python -m pipeline.deploy.web build [--out site]              # after dvc repro
    python -m pipeline.deploy.web serve [--dir site] [--port 8000]   # http://127.0.0.1:8000

`build` reads each task's `champion` alias from the MLflow registry (the report stage sets it),
checks that the registered model is the one in `onnx/` (the same bytes), and copies the INT8
model where validation passed it (smaller, and its gate held), else the fp32 one. Beside each
model goes what the page needs, from the model's own metadata (the tokenizer, the labels, the
normalisation, lookback and horizon, the generator's vocabulary and state), the registered
version, its validation figures and an example request (the served model's, from the kind's
spec). onnxruntime-web comes from the pinned npm package in `web/` (`package.json`,
`package-lock.json`; installed with `npm ci` when missing): nothing loads from a CDN.

`serve` serves the folder on 127.0.0.1 with the cross-origin-isolation headers that wasm
threads need (Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy:
require-corp). Opened from file://, the page cannot load (module imports need http), and any
static host serves it if it sends those two headers (without them, one thread).

No torch here: this is the deployment path.
"""

from __future__ import annotations

import argparse
import csv
import functools
import http.server
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.deploy.predict import INT8_SUFFIX
from pipeline.files import atomic_dir, file_digest, read_json
from pipeline.layout import METADATA_PREFIX, int8_model, run_paths

WEB = Path(__file__).resolve().parents[2] / "web"   # the page's sources and the npm package
PAGE = ("index.html", "style.css", "app.mjs", "tokenizer.mjs", "sampling.mjs")
ORT = Path("node_modules/onnxruntime-web")
ORT_FILES = ("dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.wasm", "dist/ort-wasm-simd-threaded.mjs")
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class WebError(RuntimeError):
    """The site cannot be built from what is here; the message says what to run."""


def onnxruntime_web(web: Path = WEB) -> Path:
    """The pinned onnxruntime-web package, installed from web/package-lock.json if it is not yet."""
    package = web / ORT
    if not (package / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise WebError(f"{package}: not installed, and npm is not on PATH; install Node.js and npm, "
                           f"then run `npm ci --prefix {web}`")
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(web)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise WebError(f"`npm ci --prefix {web}` failed:\n{result.stderr[-2000:]}")
    return package


def browser_tools() -> tuple[str | None, str | None]:
    """(node, chromium): their paths on PATH, None where absent (Debian calls Chromium `chromium`,
    other systems `chromium-browser`). What the browser tests and benchmark need to drive a page."""
    return shutil.which("node"), shutil.which("chromium") or shutil.which("chromium-browser")


def drive(url: str, plan: list[dict], folder: Path, timeout: float = 600) -> dict:
    """The page at `url` driven in headless Chromium by web/drive.mjs through `plan` (written to
    `folder`/plan.json): what drive.mjs prints (readiness, threads, requests, each step's answers)."""
    node, chromium = browser_tools()
    if node is None or chromium is None:
        raise WebError(f"driving the page needs Node.js and Chromium on PATH (node: {node}, chromium: {chromium})")
    (folder / "plan.json").write_text(json.dumps(plan))
    result = subprocess.run([node, str(WEB / "drive.mjs"), "--url", url, "--chromium", chromium,
                             "--plan", str(folder / "plan.json")], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise WebError(f"web/drive.mjs failed (exit {result.returncode}): {result.stderr[-3000:]}")
    return json.loads(result.stdout)


def model_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def registered_onnx(client, name: str, version: str) -> Path:
    """The ONNX file of a registered version, downloaded (the served model holds one)."""
    import mlflow.artifacts

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}"))
    found = sorted(p for p in local.rglob("*.onnx") if not p.name.endswith(INT8_SUFFIX))
    if len(found) != 1:
        raise WebError(f"models:/{name}/{version}: expected one fp32 .onnx file, found {[p.name for p in found]}")
    return found[0]


def champion(config, client, task_name: str) -> dict:
    """The champion of one task: its registered version, its run, and the file the page runs."""
    from mlflow.exceptions import MlflowException

    task = config.task[task_name]
    try:
        version = client.get_model_version_by_alias(task_name, "champion")
    except MlflowException:
        raise WebError(f"task {task_name}: no `champion` alias in the registry ({client.tracking_uri}); "
                       "run `dvc repro` (the report stage sets it)") from None
    model = version.tags["model"]
    paths = run_paths(config.paths, task_name, model, task.head)
    if not paths.onnx_model.is_file() or file_digest(paths.onnx_model) != file_digest(
            registered_onnx(client, task_name, version.version)):
        raise WebError(f"task {task_name}: champion version {version.version} ({model}) is not the model in "
                       f"{paths.onnx_model}; run `dvc repro` so that the two agree")
    record = read_json(paths.onnx_metrics)
    int8 = bool(config.export.int8 and record["passed"] and "int8_metric" in record["cpu"])
    training = client.get_run(version.tags["run_id"]).data.metrics
    return {"name": task_name, "kind": task.head, "run": paths.name, "registered": task_name,
            "version": version.version, "int8": int8, "file": int8_model(paths.onnx_model) if int8 else paths.onnx_model,
            "validation": {k: v for k, v in sorted(training.items()) if k.startswith("best/val/")}}


def csv_text(frame: dict) -> str:
    """A `dataframe_split` request body ({columns, data}) as CSV text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(frame["columns"])
    writer.writerows(frame["data"])
    return out.getvalue()


def example(config, task_name: str) -> dict:
    """What the panel starts with: the served model's ordinary request (the kind's spec), and a
    series request as a CSV file beside the model."""
    from pipeline.kinds.specs import spec_of

    task = config.task[task_name]
    spec = spec_of(task.head)
    request = spec.ordinary_request(spec.request_material(task))
    found = {"request": request, "sampling": getattr(spec, "SAMPLING", None),
             "target": getattr(task.prepare, "target", None)}   # a series' own target, to plot
    if "dataframe_split" in request:
        found = {"sample": "sample.csv", "sample_csv": csv_text(request.pop("dataframe_split")), **found}
    return found


def build(config, out: Path, web: Path = WEB) -> dict:
    """The site in `out` (replaced whole, only once every piece is ready); returns site.json."""
    from importlib.metadata import version as installed
    from mlflow import MlflowClient

    from pipeline.tracking import resolve_uri

    client = MlflowClient(resolve_uri(config.tracking))
    package = onnxruntime_web(web)
    ort_version = json.loads((package / "package.json").read_text())["version"]
    site = {"onnxruntime_web": ort_version, "onnxruntime_python": installed("onnxruntime-gpu"), "tasks": []}
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)   # a folder to publish as it is
        for name in PAGE:
            shutil.copy2(web / name, tmp / name)
        (tmp / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copy2(package / name, tmp / "ort" / Path(name).name)
        for task_name in config.task:
            found = champion(config, client, task_name)
            folder = tmp / task_name
            folder.mkdir()
            shutil.copy2(found["file"], folder / "model.onnx")
            material = example(config, task_name)
            if "sample_csv" in material:
                (folder / material["sample"]).write_text(material.pop("sample_csv"), encoding="utf-8")
            site["tasks"].append({**{k: v for k, v in found.items() if k != "file"}, **material,
                                  "model": "model.onnx", "bytes": (folder / "model.onnx").stat().st_size,
                                  "meta": model_metadata(found["file"])})
        (tmp / "site.json").write_text(json.dumps(site, indent=1), encoding="utf-8")
    return site


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the cross-origin-isolation headers, and the module and wasm MIME types."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def end_headers(self):
        for key, value in ISOLATION.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format, *args):   # quiet: one line per request is noise here
        pass


def server(directory: Path, port: int, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    if not (directory / "site.json").is_file():
        raise WebError(f"{directory}: no site.json; build it first with `python -m pipeline.deploy.web build --out {directory}`")
    handler = functools.partial(IsolatedHandler, directory=str(directory))
    return http.server.ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy.web", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_args = commands.add_parser("build", help="build the site from each task's registered champion")
    build_args.add_argument("--out", type=Path, default=Path("site"))
    build_args.add_argument("--web", type=Path, default=WEB, help="the page's sources and its npm package (default: %(default)s)")
    serve_args = commands.add_parser("serve", help="serve a built site on 127.0.0.1 with the isolation headers")
    serve_args.add_argument("--dir", type=Path, default=Path("site"))
    serve_args.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            site = build(load_config(), args.out, args.web)
            for task in site["tasks"]:
                print(f"web: {task['name']}: {task['run']} (version {task['version']}, "
                      f"{'INT8' if task['int8'] else 'fp32'}, {task['bytes'] / 1e6:.1f} MB)")
            print(f"web: built {args.out}/ with onnxruntime-web {site['onnxruntime_web']}; "
                  f"serve it with `python -m pipeline.deploy.web serve --dir {args.out}`")
            return 0
        httpd = server(args.dir, args.port)
    except (WebError, ConfigError, FileNotFoundError) as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 1
    print(f"web: serving {args.dir}/ on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
