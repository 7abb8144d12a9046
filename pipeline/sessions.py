"""onnxruntime sessions on a named execution provider, and the truth about which one ran.

onnxruntime-gpu falls back to the CPU silently when the CUDA libraries are missing: it logs
the reason through its native logger and hands back a CPU session. `open_session` reads the
provider back from `session.get_providers()` and turns such a fallback into (None, reason),
so no caller (validate, predict, benchmarks) ever reports a CPU run as CUDA.

Imports onnxruntime only, never torch: the deployment path (`pipeline.predict`) uses it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator

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


def open_session(path: str | Path, provider: str):
    """(session, None) when `provider` really runs the model, else (None, reason)."""
    import onnxruntime as ort

    with captured_stderr() as log_lines:
        try:
            session = ort.InferenceSession(str(path), providers=[provider])
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
            session, failure = None, without_machine_paths(f"{provider} failed to start: {exc}")
    if session is None:
        return None, failure
    running = session.get_providers()
    if not running or running[0] != provider:
        return None, f"requested {provider}, but the session runs on {running}: {explain(log_lines, provider)}"
    return session, None
