"""What the deployment path refuses, and why: its error types and the request limits.

conf/serve's serve.limits are stamped into the model by pipeline.stages.export. Each is checked on a
request's sizes alone, before any tokenising or inference, by pipeline.deploy.predict and by the served
model (pipeline.deploy.serving) alike. Numpy-free, torch-free: every kind's request reader imports it.
"""

from __future__ import annotations

import json


class PredictError(ValueError):
    """Input or model that this deployment path cannot use; the message says which and why."""


class LimitError(PredictError):
    """A request over one of the model's limits; the message names it, the value and the setting."""


def limits_of(meta: dict) -> dict | None:
    """The model's request limits, or None for a model exported before it carried any."""
    return json.loads(meta["serve_limits"]) if "serve_limits" in meta else None


def within(limits: dict | None, setting: str, found: int, what: str) -> None:
    if limits is not None and found > limits[setting]:
        raise LimitError(f"{what}: {found:,} is over the model's limit of {limits[setting]:,} (serve.limits.{setting} "
                         "in conf/serve/default.yaml, stamped in at export; `python -m pipeline.deploy.predict "
                         "--no-limits` lifts it on your own machine)")
