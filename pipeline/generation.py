"""Character-level generation and scoring over any stateful step function, with numpy only.

A step function maps (ids [B, T] int64, state: tuple of arrays) -> (logits [B, T, V], state).
PyTorch's model (pipeline.train, pipeline.validate) and onnxruntime's session
(pipeline.predict) both provide one, so training, validation and deployment generate and
score with the same code. No torch here: the deployment path imports this module.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Step = Callable[[np.ndarray, tuple], tuple[np.ndarray, tuple]]

# How text is sampled unless asked otherwise: the samples that training logs to MLflow (from
# the task's fixed prompt), pipeline.predict's defaults and a served request's missing fields.
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
    """A Step over an onnxruntime session of a stateful generator graph (pipeline.export):
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
