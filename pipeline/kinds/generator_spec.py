"""The generator, torch-free: how a deployed model reads a request and answers it
(pipeline.deploy.predict, the served model). Its name, metric and settings are
`generator_settings.py`; the rest of the kind, which needs torch, is `generator.py`.

Generation and scoring over any stateful step function, numpy only: a step maps (ids [B, T]
int64, state: a tuple of arrays) -> (logits [B, T, V], state). PyTorch's model (train,
validate) and onnxruntime's session (predict, the served model) both provide one, so training,
validation and deployment generate and score with the same code."""

from __future__ import annotations

import json
import math
from typing import Callable, Sequence

import numpy as np

from pipeline.deploy.limits import PredictError, within
from pipeline.kinds.generator_settings import MAXIMIZE, METRIC, NAME, Settings  # noqa: F401  (the kind's names)

STRING_FIELD = "prompt"
ROW_LIMIT = None                   # one row: from_records refuses more

Step = Callable[[np.ndarray, tuple], tuple[np.ndarray, tuple]]

# How text is sampled unless asked otherwise: the samples that training logs to MLflow (from
# the task's fixed prompt), pipeline.deploy.predict's defaults and a served request's missing fields.
SAMPLING = {"max_chars": 500, "temperature": 0.8, "seed": 0, "top_k": None}


class VocabularyError(ValueError):
    """Text with characters outside the model's vocabulary (there is no [UNK] id)."""


def encode(text: str, vocab: Sequence[str]) -> np.ndarray:
    lookup = {char: i for i, char in enumerate(vocab)}
    unknown = sorted({c for c in text if c not in lookup})
    if unknown:
        raise VocabularyError(f"character(s) {''.join(unknown)!r} are not in the model's vocabulary of "
                              f"{len(vocab)}: {''.join(vocab)!r}")
    return np.array([lookup[c] for c in text], dtype=np.int64)


def decode(ids, vocab: Sequence[str]) -> str:
    return "".join(vocab[int(i)] for i in ids)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def pick(logits: np.ndarray, temperature: float, rng: np.random.Generator, top_k: int | None = None) -> int:
    """The next id from the last logits [V]: argmax at temperature 0, else a seeded sample."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    if top_k is not None and top_k < len(logits):
        cutoff = np.sort(logits)[-top_k]
        logits = np.where(logits < cutoff, -np.inf, logits)
    probabilities = np.exp(log_softmax(logits / temperature))
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


def generate(step: Step, state: tuple, prompt_ids: np.ndarray, count: int, temperature: float, seed: int,
             top_k: int | None = None) -> list[int]:
    """Read the prompt in one call, then `count` ids one call each (batch 1)."""
    rng = np.random.default_rng(seed)
    logits, state = step(prompt_ids.reshape(1, -1).astype(np.int64), state)
    generated = []
    for _ in range(count):
        next_id = pick(logits[0, -1], temperature, rng, top_k)
        generated.append(next_id)
        logits, state = step(np.array([[next_id]], dtype=np.int64), state)
    return generated


def session_step(session) -> Step:
    """A Step over an onnxruntime session of a stateful generator graph (pipeline.stages.export):
    inputs input_ids and the state, outputs logits and the new state, in that order."""
    names = [value.name for value in session.get_inputs()]

    def step(ids: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        out = session.run(None, {names[0]: ids, **dict(zip(names[1:], state))})
        return out[0], tuple(out[1:])
    return step


def session_zero_state(session) -> Callable[[int], tuple]:
    """batch -> zeros for each state input ([num_layers, batch, hidden_size], fixed but batch)."""
    shapes = [value.shape for value in session.get_inputs()[1:]]
    return lambda batch: tuple(np.zeros((layers, batch, hidden), dtype=np.float32) for layers, _, hidden in shapes)


def stream_loss(step: Step, zero_state: Callable[[int], tuple], ids: np.ndarray, streams: int,
                block: int) -> float:
    """Mean negative log-likelihood (nats per character) of predicting ids[1:] from ids[:-1].

    The text is cut into `streams` contiguous pieces read side by side, `block` characters
    per call, the state carried from call to call: every character is scored once, with its
    whole piece before it as context (a truncated remainder of under `streams` characters is
    left out).
    """
    ids = np.asarray(ids, dtype=np.int64)
    length = (len(ids) - 1) // streams
    inputs = ids[:length * streams].reshape(streams, length)
    targets = ids[1:length * streams + 1].reshape(streams, length)
    state, total = zero_state(streams), 0.0
    for start in range(0, length, block):
        logits, state = step(inputs[:, start:start + block], state)
        chosen = np.take_along_axis(log_softmax(logits.astype(np.float64)), targets[:, start:start + block, None], -1)
        total -= float(chosen.sum())
    return total / (length * streams)


def bits(nats: float) -> float:
    """Bits per character from nats per character."""
    return nats / math.log(2)



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
    """pipeline.deploy.predict's --prompt, --max-chars, --temperature, --seed and --top-k."""
    given = {"max_chars": args.max_chars, "temperature": args.temperature, "seed": args.seed, "top_k": args.top_k}
    chosen = {k: SAMPLING[k] if v is None else v for k, v in given.items()}   # the command line's defaults
    check_generation_args(args.prompt, chosen["max_chars"], chosen["temperature"], chosen["top_k"], limits)
    return {"prompt": args.prompt, **chosen}


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
        prompt_ids = encode(args["prompt"], vocab)
    except VocabularyError as exc:
        raise PredictError(f"--prompt: {exc}") from None
    ids = generate(session_step(session), session_zero_state(session)(1),
                              prompt_ids, args["max_chars"], args["temperature"], args["seed"], args["top_k"])
    return {"prompt": args["prompt"], "text": decode(ids, vocab), "temperature": args["temperature"],
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
