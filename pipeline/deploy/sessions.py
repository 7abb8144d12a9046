"""onnxruntime sessions on a named execution provider, and the truth about which one ran.

onnxruntime-gpu falls back to the CPU silently when the CUDA libraries are missing: it logs
the reason through its native logger and hands back a CPU session. `open_session` reads the
provider back from `session.get_providers()` and turns such a fallback into (None, reason),
so no caller (validate, predict, benchmarks) ever reports a CPU run as CUDA.

Imports onnxruntime only, never torch: the deployment path (`pipeline.deploy.predict`) uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (onnxruntime's logger)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def without_machine_paths(text: str) -> str:
    """`<venv>/lib/.../onnxruntime/capi/libonnxruntime_providers_cuda.so` -> `libonnxruntime_providers_cuda.so`:
    the library and the error stay, the machine's folders go (the reports are committed)."""
    return re.sub(r"(?<![\w.])/(?:[^\s/:'\"]+/)+([^\s/:'\"]+)", r"\1", text)


def explain(log_lines: list[str], provider: str) -> str:
    """The most telling line onnxruntime logged when it dropped a provider."""
    for needle in ("Failed to load library", "Failed to create", "error"):
        for line in log_lines:
            if needle in line:
                return without_machine_paths(line[line.index(needle):].replace("\x1b[m", "").strip())
    return f"{provider} is not available in this onnxruntime build"


# The SessionOptions a workload's settings may set, by their names here. The config's
# export.session sets only the thread count (pipeline/config.py SessionSettings says why);
# benchmarks/session_settings.py tries the others. A key left out keeps onnxruntime's default.
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
SETTINGS = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode", "graph_optimization_level")


def session_options(settings: Mapping[str, Any] | None):
    """onnxruntime.SessionOptions from `{intra_op_num_threads: 1, execution_mode: sequential, ...}`
    (0 threads = onnxruntime's choice); None or {} gives onnxruntime's defaults."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    unknown = sorted(set(settings or {}) - set(SETTINGS))
    if unknown:
        raise ValueError(f"session settings: unknown key(s) {unknown}; expected some of {list(SETTINGS)}")
    for key, value in (settings or {}).items():
        if key == "execution_mode":
            value = getattr(ort.ExecutionMode, EXECUTION_MODES[value])
        elif key == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[value])
        setattr(options, key, value)
    return options


def open_session(path: str | Path, provider: str, settings: Mapping[str, Any] | None = None):
    """(session, None) when `provider` really runs the model, else (None, reason). `settings`:
    the SessionOptions by name (see `session_options`); None keeps onnxruntime's defaults."""
    import onnxruntime as ort

    options = session_options(settings)
    with captured_stderr() as log_lines:
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
            session, failure = None, without_machine_paths(f"{provider} failed to start: {exc}")
    if session is None:
        return None, failure
    running = session.get_providers()
    if not running or running[0] != provider:
        return None, f"requested {provider}, but the session runs on {running}: {explain(log_lines, provider)}"
    return session, None


def open_workloads(path, provider: str, session_config) -> tuple[dict | None, str | None]:
    """({"latency": session, "throughput": session}, None) with `export.session`'s settings,
    or (None, why the provider does not run the model). Equal settings share one session (the
    default: loading a model twice costs time and memory for nothing)."""
    sessions, by_settings = {}, {}
    for workload in ("latency", "throughput"):
        settings = getattr(session_config, workload).model_dump()
        key = json.dumps(settings, sort_keys=True)
        if key not in by_settings:
            session, reason = open_session(path, provider, settings)
            if session is None:
                return None, reason
            by_settings[key] = session
        sessions[workload] = by_settings[key]
    return sessions, None
