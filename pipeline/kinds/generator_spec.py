"""The generator (character-level language model), torch-free: its name, its settings, its
metric, and how a deployed model reads a request and answers it (pipeline.predict, the served
model). The rest of the kind, which needs torch, is pipeline/kinds/generator.py."""

from __future__ import annotations

import json

import numpy as np
from pydantic import model_validator

from pipeline import generation
from pipeline.generation import SAMPLING
from pipeline.limits import PredictError, within
from pipeline.schema import Dropout, PositiveInt, Section

NAME = "generator"
METRIC, MAXIMIZE = "loss", False   # nats per character
STRING_FIELD = "prompt"
ROW_LIMIT = None                   # one row: from_records refuses more


class Settings(Section):
    """model.<name>.generator: the constructor's arguments (pipeline/models.py CharGenerator)."""

    embedding_dim: PositiveInt
    hidden_size: PositiveInt
    num_layers: PositiveInt
    dropout: Dropout
    tie_weights: bool   # the output layer reuses the embedding (needs embedding_dim == hidden_size)

    @model_validator(mode="after")
    def _tying_fits(self) -> "Settings":
        if self.tie_weights and self.embedding_dim != self.hidden_size:
            raise ValueError(f"tie_weights needs embedding_dim == hidden_size, found {self.embedding_dim} "
                             f"and {self.hidden_size}")
        return self


def example(meta: dict) -> str:
    return '{"inputs": "ROMEO:"} or {"dataframe_records": [{"prompt": "ROMEO:", "max_chars": 200}]}'


# ---- reading a request ---------------------------------------------------------------------------


def check_generation_args(prompt: str | None, max_chars: int, temperature: float, top_k: int | None,
                          limits: dict | None = None) -> str:
    if prompt is None or prompt == "":
        raise PredictError("a generator needs a non-empty --prompt, e.g. --prompt 'ROMEO:'")
    within(limits, "max_prompt_chars", len(prompt), "characters in the prompt")
    if max_chars <= 0:
        raise PredictError(f"--max-chars must be at least 1, found {max_chars}")
    within(limits, "max_generate_chars", max_chars, "characters to generate (max_chars)")
    if temperature < 0:
        raise PredictError(f"--temperature must be >= 0 (0 = greedy), found {temperature}")
    if top_k is not None and top_k <= 0:
        raise PredictError(f"--top-k must be at least 1, found {top_k}")
    return prompt


def from_cli(args, meta: dict, limits: dict | None) -> dict:
    """pipeline.predict's --prompt, --max-chars, --temperature, --seed and --top-k."""
    check_generation_args(args.prompt, args.max_chars, args.temperature, args.top_k, limits)
    return {"prompt": args.prompt, "max_chars": args.max_chars, "temperature": args.temperature,
            "seed": args.seed, "top_k": args.top_k}


def absent(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def whole_number(row: dict, field: str, minimum: int | None) -> int | None:
    value = row.get(field, SAMPLING[field])
    if absent(value):
        return SAMPLING[field]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not float(value).is_integer():
        raise PredictError(f"{field} must be a whole number, found {value!r}")
    if minimum is not None and value < minimum:
        raise PredictError(f"{field} must be at least {minimum}, found {int(value)}")
    return int(value)


def from_records(records: list[dict], meta: dict | None = None, limits: dict | None = None) -> dict:
    """prompt, max_chars, temperature, seed, top_k of a one-row request, defaults filled in."""
    if len(records) != 1:
        raise PredictError(f"a generator takes one row (prompt, and optionally {', '.join(SAMPLING)}), "
                           f"found {len(records)} rows")
    row = records[0]
    unknown = sorted(set(row) - {"prompt", *SAMPLING})
    if unknown:
        raise PredictError(f"unknown field(s) {unknown}; a generator takes prompt, {', '.join(SAMPLING)}")
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise PredictError(f"a generator needs a field 'prompt' with text, found {prompt!r}")
    temperature = row.get("temperature", SAMPLING["temperature"])
    if absent(temperature):
        temperature = SAMPLING["temperature"]
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise PredictError(f"temperature must be a number (0 = greedy), found {temperature!r}")
    args = {"prompt": prompt, "max_chars": whole_number(row, "max_chars", None), "temperature": float(temperature),
            "seed": whole_number(row, "seed", 0), "top_k": whole_number(row, "top_k", None)}
    check_generation_args(prompt, args["max_chars"], args["temperature"], args["top_k"], limits)
    return args


def rows(args: dict) -> int:
    return 1   # one character per call


# ---- answering it -------------------------------------------------------------------------------


def context(meta: dict, tokenizer: str | None = None):
    return None


def answer(session, meta: dict, args: dict, context=None) -> dict:
    """The prompt read in one call of the stateful graph, then one character per call."""
    vocab = json.loads(meta["vocab"])
    try:
        prompt_ids = generation.encode(args["prompt"], vocab)
    except generation.VocabularyError as exc:
        raise PredictError(f"--prompt: {exc}") from None
    ids = generation.generate(generation.session_step(session), generation.session_zero_state(session)(1),
                              prompt_ids, args["max_chars"], args["temperature"], args["seed"], args["top_k"])
    return {"prompt": args["prompt"], "text": generation.decode(ids, vocab), "temperature": args["temperature"],
            "seed": args["seed"], "top_k": args["top_k"]}


# ---- the serving benchmark's requests (benchmarks/serving_load.py) ------------------------------


def request_material(task) -> None:
    return None


def longest_request(limits: dict) -> dict:
    """max_generate_chars characters from a short prompt: the longest request served."""
    return {"dataframe_records": [{"prompt": "ROMEO:", "max_chars": limits["max_generate_chars"]}]}


def ordinary_request(window: dict | None) -> dict:
    return {"dataframe_records": [{"prompt": "ROMEO:", "max_chars": 200, "seed": 1}]}


def refused_requests(limits: dict, window: dict | None) -> dict[str, tuple[dict, int, str]]:
    return {"max_prompt_chars": ({"inputs": "a" * (limits["max_prompt_chars"] + 1)}, 400,
                                 "serve.limits.max_prompt_chars"),
            "max_generate_chars": ({"dataframe_records": [{"prompt": "ROMEO:",
                                                           "max_chars": limits["max_generate_chars"] + 1}]},
                                   400, "serve.limits.max_generate_chars"),
            "negative temperature": ({"dataframe_records": [{"prompt": "ROMEO:", "temperature": -1}]}, 400,
                                     "temperature")}
