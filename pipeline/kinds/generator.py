"""The generator kind on the pipeline's side: a character-level language model trained on
next-character cross-entropy, scored on whole splits read as streams (nats and bits per
character) beside a bigram model, exported as a stateful step graph, validated on greedy
generation and decoding speed. Its torch-free half is generator_spec.py."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from pipeline.files import save_png, write_text_atomic
from pipeline.kinds.generator_spec import (
    SAMPLING,
    VocabularyError,
    bits,
    decode,
    encode,
    generate,
    log_softmax,
    session_step,
    session_zero_state,
    stream_loss,
)
from pipeline.kinds import generator_spec
from pipeline.kinds.base import Kind, int8_gate
from pipeline.latency import LATENCY_BATCHES, LATENCY_SEQUENCE, REPEATS, synced, timings
from pipeline.nets.backbone import STATES
from pipeline.nets.generator import CharGenerator
from pipeline.parity import Parity
from pipeline.training.plots import pyplot, write_csv
from pipeline.schema import ConfigError

GREEDY_CHARS = 300
PROMPT_CHARS = LATENCY_SEQUENCE  # the prompt whose reading throughput is timed, as long as a timed review
DECODE_REPEATS = 200


class NextCharLoss(nn.CrossEntropyLoss):
    """Cross-entropy of logits [B, T, V] against the next characters [B, T], per character."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits.flatten(0, 1), target.flatten())


class StatefulGenerator(nn.Module):
    """(input_ids, *state) -> (logits, *new state): the generator's step as a graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *state: torch.Tensor):
        logits, new = self.model.step(input_ids, state)
        return (logits, *new)


# ---- scoring: whole splits as contiguous streams, the state carried (generator_spec.py) -------


def torch_step(model, device: torch.device):
    """A generator_spec.Step over a CharGenerator: numpy in, numpy out."""
    def step(ids: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        with torch.no_grad():
            logits, new = model.step(torch.from_numpy(ids).to(device),
                                     tuple(torch.from_numpy(s).to(device) for s in state))
        return logits.float().cpu().numpy(), tuple(s.float().cpu().numpy() for s in new)
    return step


def zero_state(model):
    """batch -> the zero state of a CharGenerator, as numpy arrays."""
    return lambda batch: tuple(s.numpy() for s in model.zero_state(batch))


def text_loss(model, ids: np.ndarray, device: torch.device, streams: int, block: int) -> float:
    model.eval()
    return stream_loss(torch_step(model, device), zero_state(model), ids, streams, block)


def bigram_loss(train_ids: np.ndarray, ids: np.ndarray, vocab_size: int) -> float:
    """Nats per character of a bigram model fitted on train (add-one smoothing)."""
    counts = np.ones((vocab_size, vocab_size))
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1)
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    return float(-log_p[ids[:-1], ids[1:]].mean())


def position_loss(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean loss (nats) at each position of windows read from a zero state: how much the
    characters before help."""
    return -np.take_along_axis(log_softmax(logits), targets[..., None], -1)[..., 0].mean(0)


# ---- validation: the stateful graph against PyTorch -------------------------------------------


def generator_parity_cases(args: dict, seed: int = 0) -> list[tuple[np.ndarray, tuple]]:
    """(ids, state): batch 1 x time 1, batch 3 x time 17 from a non-zero state, batch 64 x time 256."""
    rng = np.random.default_rng(seed)
    count = len(STATES[args["cell"]])
    cases = []
    for batch, time_steps, scale in ((1, 1, 0.0), (3, 17, 0.5), (64, 256, 0.0)):
        ids = rng.integers(0, args["vocab_size"], (batch, time_steps)).astype(np.int64)
        state = tuple((scale * rng.standard_normal((args["num_layers"], batch, args["hidden_size"])))
                      .astype(np.float32) for _ in range(count))
        cases.append((ids, state))
    return cases


def step_parity(ours, theirs, cases, gates=None) -> tuple[Parity, Parity]:
    """(outputs, states) across the cases: the next-character log-probabilities (what sampling
    reads; logits are defined only up to a constant) at `gates.outputs`, every returned state
    at `gates.states`; None keeps only the largest differences."""
    outputs, states = Parity(), Parity()
    for ids, state in cases:
        (logits_a, state_a), (logits_b, state_b) = ours(ids, state), theirs(ids, state)
        outputs.add("log_probabilities", log_softmax(logits_a), log_softmax(logits_b), gates and gates.outputs)
        for index, (a, b) in enumerate(zip(state_a, state_b)):
            states.add(f"state {index}", a, b, gates and gates.states)
    return outputs, states


def decode_latency(step, zero, device: torch.device) -> dict:
    """ms per generated character (one step of batch 1 from a carried state) and the
    prompt-reading rate (characters per second, batch 1)."""
    _, state = step(np.zeros((1, 8), dtype=np.int64), zero(1))
    one = np.zeros((1, 1), dtype=np.int64)
    prompt = np.zeros((1, PROMPT_CHARS), dtype=np.int64)
    per_char = timings(synced(lambda: step(one, state), device), DECODE_REPEATS)
    reading = timings(synced(lambda: step(prompt, zero(1)), device), REPEATS[max(LATENCY_BATCHES)])
    return {"ms_per_char": float(np.median(per_char)),
            "prompt_chars_per_s": PROMPT_CHARS * 1000.0 / float(np.median(reading))}


class Generator(Kind):
    spec = generator_spec
    model_class = CharGenerator
    quality = ("test/loss", "test/bpc", "anchor/val10_loss")
    floor = "bigram, fitted on train"
    onnx_columns = (("ONNX CPU ms/char", "cpu", "ms_per_char", 2), ("ONNX CPU prompt chars/s", "cpu", "prompt_chars_per_s", 0))
    speedups = ("per char / prompt", "speedup_vs_torch_per_char", "speedup_vs_torch_prompt")
    key_latency = ("ms_per_char", "speedup_vs_torch_per_char")
    key_int8_speedup = "int8_speedup_vs_fp32_per_char"

    def data_args(self, settings, meta, names):
        return {"vocab_size": meta["vocab_size"]}

    def check(self, task, meta, names):
        try:
            encode(task.train.sample_prompt, meta["vocab"])
        except VocabularyError as exc:
            raise ConfigError(f"task.{names[0]}.train.sample_prompt: {exc}") from None

    def loss(self):
        return NextCharLoss()

    def evaluate(self, model, loader, device, task, split):
        """Loss (nats per character) and bits per character over the whole split."""
        dataset = loader.dataset
        loss = text_loss(model, dataset.ids.numpy(), device, task.train.eval_streams, dataset.block_size)
        return {f"{split}/loss": loss, f"{split}/bpc": bits(loss)}

    def test_metrics(self, model, data, device, task, outputs, targets):
        """Test, and nanoGPT's "val": the loss over the last 10% of the characters (val + test)."""
        val10 = np.concatenate([loader.dataset.ids.numpy() for loader in (data.val, data.test)])
        return {**self.evaluate(model, data.test, device, task, "test"),
                "anchor/val10_loss": text_loss(model, val10, device, task.train.eval_streams, task.train.block_size)}

    def naive_floor(self, data):
        train_ids, test_ids = (loader.dataset.ids.numpy() for loader in (data.train, data.test))
        loss = bigram_loss(train_ids, test_ids, data.meta["vocab_size"])
        return {"baseline/loss": loss, "baseline/bpc": bits(loss)}

    def sample(self, model, meta, task, device):
        """The task's fixed prompt and what the model writes after it (SAMPLING's settings)."""
        vocab, prompt = meta["vocab"], task.train.sample_prompt
        model.eval()
        ids = generate(torch_step(model, device), zero_state(model)(1), encode(prompt, vocab),
                       SAMPLING["max_chars"], SAMPLING["temperature"], SAMPLING["seed"], SAMPLING["top_k"])
        return prompt + decode(ids, vocab)

    def write_plots(self, paths, outputs, targets, meta, test_dataset, sample):
        """The test loss by position in a window read from a zero state, and the final sample."""
        loss = position_loss(outputs, targets)
        files = [write_csv(paths.head_plot, ["position", "loss"], ((p + 1, float(v)) for p, v in enumerate(loss)))]
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(np.arange(1, len(loss) + 1), loss)
        ax.set_xlabel("position in the window (characters read, from a zero state)")
        ax.set_ylabel("test loss (nats per character)")
        ax.set_title(f"{paths.name}: loss by context length")
        fig.tight_layout()
        files.append(save_png(fig, paths.figures / "position_loss.png"))
        write_text_atomic(paths.sample, sample)
        return files + [paths.sample]

    # ---- export ---------------------------------------------------------------------------------

    def graph_interface(self, args, meta):
        names = list(STATES[args["cell"]])
        ids = torch.randint(0, args["vocab_size"], (2, 16))
        state = tuple(torch.randn(args["num_layers"], 2, args["hidden_size"]) for _ in names)
        state_axes = {name: {1: "batch"} for name in names} | {f"{name}_out": {1: "batch"} for name in names}
        return {"inputs": ["input_ids", *names], "outputs": ["logits", *(f"{n}_out" for n in names)],
                "example": (ids, *state),
                "dynamic_axes": {"input_ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"},
                                 **state_axes}}

    def export_module(self, model):
        return StatefulGenerator(model)

    def deployment_metadata(self, task, settings, cell, meta):
        names = list(STATES[cell])
        return {"vocab": json.dumps(meta["vocab"]), "num_layers": str(settings.num_layers),
                "hidden_size": str(settings.hidden_size), "state_inputs": json.dumps(names),
                "state_outputs": json.dumps([f"{n}_out" for n in names]),
                "state_shape": "[num_layers, batch, hidden_size]", "sample_prompt": task.train.sample_prompt}

    # ---- validation -----------------------------------------------------------------------------

    def onnx_checks(self, sessions, model, trained, task, loader, device, gates):
        """Parity on logits and state, the test loss, greedy generation and latency, ONNX against
        PyTorch: decoding (batch 1) on the latency session, parity and the test loss on the throughput one."""
        model.eval()
        test_ids = loader.dataset.ids.numpy()
        ours, theirs, bulk = session_step(sessions["latency"]), torch_step(model, device), session_step(sessions["throughput"])
        ours_zero, theirs_zero = session_zero_state(sessions["latency"]), zero_state(model)
        prompt = encode(task.train.sample_prompt, trained.meta["vocab"])
        greedy = [generate(step, zero(1), prompt, GREEDY_CHARS, 0.0, 0)
                  for step, zero in ((ours, ours_zero), (theirs, theirs_zero))]
        onnx_speed, torch_speed = decode_latency(ours, ours_zero, device), decode_latency(theirs, theirs_zero, device)
        outputs, states = step_parity(bulk, theirs, generator_parity_cases(trained.model_args["args"]), gates)
        return {"max_abs_diff": max(outputs.max_abs_diff, states.max_abs_diff),
                **outputs.record("parity", gates.outputs), **states.record("state_parity", gates.states),
                "onnx_metric": stream_loss(bulk, ours_zero, test_ids, task.train.eval_streams, task.train.block_size),
                "greedy_chars": GREEDY_CHARS, "greedy_identical": greedy[0] == greedy[1],
                "ms_per_char": onnx_speed["ms_per_char"], "torch_ms_per_char": torch_speed["ms_per_char"],
                "speedup_vs_torch_per_char": torch_speed["ms_per_char"] / onnx_speed["ms_per_char"],
                "prompt_chars_per_s": onnx_speed["prompt_chars_per_s"],
                "torch_prompt_chars_per_s": torch_speed["prompt_chars_per_s"],
                "speedup_vs_torch_prompt": onnx_speed["prompt_chars_per_s"] / torch_speed["prompt_chars_per_s"]}

    def int8_checks(self, sessions, trained, task, loader, fp32, rule):
        """ms per character and prompt reading, speed-ups, and the test-loss gate."""
        step, zero = session_step(sessions["latency"]), session_zero_state(sessions["latency"])
        speed = decode_latency(step, zero, torch.device("cpu"))
        loss = stream_loss(session_step(sessions["throughput"]), zero, loader.dataset.ids.numpy(),
                           task.train.eval_streams, task.train.block_size)
        return {"int8_ms_per_char": speed["ms_per_char"], "int8_prompt_chars_per_s": speed["prompt_chars_per_s"],
                "int8_speedup_vs_torch_per_char": fp32["torch_ms_per_char"] / speed["ms_per_char"],
                "int8_speedup_vs_fp32_per_char": fp32["ms_per_char"] / speed["ms_per_char"],
                **int8_gate(loss, fp32["onnx_metric"], rule)}

    # ---- the report -----------------------------------------------------------------------------

    def report_sections(self, task_name, task, runs, out_dir):
        """Each model's final sample."""
        settings = (f"{SAMPLING['max_chars']} characters after the prompt, temperature {SAMPLING['temperature']}, "
                    f"seed {SAMPLING['seed']}")
        lines = []
        for model, paths in runs.items():
            text = paths.sample.read_text(encoding="utf-8")
            lines += ["", f"{model.upper()} sample ({settings}):", "",
                      "```text", text.replace("\n\n", "\n \n").rstrip(), "```"]
        return lines[1:], []


KIND = Generator()
