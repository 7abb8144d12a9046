"""Published figures beside a task's results: a task's `anchors` (conf/task/<name>.yaml) whose
dataset and protocol fit it. Figures are facts about one dataset under one protocol, never about
a head, so a CSV task without anchors, or ETTh1 at a horizon without figures, shows none."""

from __future__ import annotations


def anchors_of(task, **protocol) -> list:
    """The task's anchor groups about its own source whose protocol its prepare settings match;
    `protocol` replaces some of those settings (the long-horizon table asks for each horizon)."""
    prepare = {**task.prepare.model_dump(), **protocol}
    return [group for group in task.anchors if group.dataset in (None, task.source.checksum)
            and all(prepare.get(k) == v for k, v in group.protocol.items())]
