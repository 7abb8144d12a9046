"""Stage `prepare@<task>`: turn a fetched source into training-ready arrays and a data card.

    python -m pipeline.stages.prepare <task>

The task's `data` (its data kind) picks the preparer, `pipeline/data/<data>.py` (looked up by
name in pipeline/data/registry.py): labelled texts in any of their formats (IMDB by default),
any CSV series (ETTh1 by default) or any UTF-8 text (Tiny Shakespeare by default). It reads the
task's raw folder, data/raw/<task>/, which fetch@<task> wrote.
"""

from __future__ import annotations

import logging
import sys
import time

from pipeline.config import load_task, stage_args
from pipeline.data.registry import data_kind
from pipeline.files import write_json_atomic

log = logging.getLogger(__name__)


def refetch_hint(exc: Exception, name: str) -> str:
    """For a fetched file that is damaged (a download cut short): how to fetch this task's again."""
    return f"; delete it and fetch it again (dvc repro -f fetch@{name})" if getattr(exc, "refetch", False) else ""


def main(argv: list[str] | None = None) -> int:
    (name,) = stage_args("pipeline.stages.prepare", ["task"], argv)
    start = time.perf_counter()
    try:
        _, task = load_task(name)
        card = data_kind(task.data).prepare(task.paths.raw, task.prepare, task.paths.prepared)
    except ValueError as exc:  # ConfigError, CsvError, TextsError and other bad input
        print(f"prepare@{name}: {exc}{refetch_hint(exc, name)}", file=sys.stderr)
        return 1
    write_json_atomic(task.paths.card, card)
    log.info("prepare@%s done in %.1fs; data card %s", name, time.perf_counter() - start, task.paths.card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
