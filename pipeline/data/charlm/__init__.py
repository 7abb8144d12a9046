"""Character-level text (Tiny Shakespeare by default) under nanoGPT's shakespeare_char protocol.

- Tokens are characters. The vocabulary is the sorted set of characters of the training
  split, so an id is a character's rank in it.
- Split: train = the first `train_fraction` of the characters; the rest is val (its first
  `val_fraction`) and test (the remainder). `val10` names the whole rest, nanoGPT's "val".
- Unknown characters: a character that is not in the vocabulary is an error, everywhere
  (here for val and test, and in pipeline.deploy.predict for a prompt), naming it and where it is.
  There is no [UNK] id: a model never saw one, so it could only guess.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.charlm_settings import CharLmPrepare
from pipeline.data import SplitData, single_file
from pipeline.files import atomic_dir, file_digest, write_json_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class TextError(ValueError):
    """A text that cannot be prepared: not UTF-8, too short, or characters outside the vocabulary."""


def read_text(path: str | Path) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TextError(f"{path}: not UTF-8 text (line {line}, byte {exc.start}: {exc.reason})") from None


def split_text(text: str, settings: CharLmPrepare) -> dict[str, str]:
    train_end = int(len(text) * settings.train_fraction)
    val_end = train_end + int((len(text) - train_end) * settings.val_fraction)
    return {"train": text[:train_end], "val": text[train_end:val_end], "test": text[val_end:]}


def check_known(text: str, vocab: list[str], where: str) -> None:
    """The unknown-character rule: an error naming each such character and its first place."""
    unknown = sorted(set(text) - set(vocab))
    if unknown:
        places = []
        for char in unknown[:5]:
            offset = text.index(char)
            places.append(f"{char!r} at line {text.count(chr(10), 0, offset) + 1}")
        raise TextError(f"{where}: {len(unknown)} character(s) not in the vocabulary ({', '.join(places)}); "
                        f"the vocabulary holds the {len(vocab)} characters of the training split")


def encode(text: str, vocab: list[str]) -> np.ndarray:
    """Character ids (uint8 when the vocabulary fits, as it does for Shakespeare's 65)."""
    lookup = {char: i for i, char in enumerate(vocab)}
    dtype = np.uint8 if len(vocab) <= 256 else np.int32
    return np.fromiter((lookup[c] for c in text), dtype=dtype, count=len(text))


def prepare(raw: str | Path, settings: CharLmPrepare, out_dir: str | Path) -> dict:
    """Split, fit the vocabulary on train, encode; write {split}.npy and meta.json. Returns the data
    card. `raw`: the text file, or the task's raw folder holding it."""
    path = single_file(raw)
    text = read_text(path)
    splits = split_text(text, settings)
    short = [name for name, part in splits.items() if len(part) < 2]
    if short:
        raise TextError(f"{path}: {len(text)} characters leave split(s) {short} with fewer than 2; "
                        "a language model needs a next character to predict")
    vocab = sorted(set(splits["train"]))
    for name in ("val", "test"):
        check_known(splits[name], vocab, f"{path} ({name} split)")
    with atomic_dir(out_dir) as tmp:
        for name, part in splits.items():
            np.save(tmp / f"{name}.npy", encode(part, vocab))
        write_json_atomic(tmp / "meta.json", {"vocab": vocab, "vocab_size": len(vocab),
                                              "chars": {name: len(part) for name, part in splits.items()}})
    card = {
        "chars": {name: len(part) for name, part in splits.items()},
        "val10_chars": len(splits["val"]) + len(splits["test"]),
        "lines": text.count("\n"),
        "vocab_size": len(vocab),
        "vocab": "".join(vocab),
        "source": {"file": Path(path).name, "sha256": file_digest(path, "sha256")},
    }
    log.info("prepared %s: %s characters, vocabulary of %d", path, card["chars"], len(vocab))
    return card


def items(card: dict) -> tuple[str, int]:
    """What the data card counts, for the benchmarks' prepare throughput: the text's characters."""
    return "chars", sum(card["chars"].values())


# ---- the datasets a stage trains or scores on -------------------------------------------------


class CharWindows(Dataset):
    """(x, y) windows of a character-id sequence: y is x shifted by one character.
    Window i starts at i * stride."""

    def __init__(self, ids: np.ndarray, block_size: int, stride: int = 1):
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.block_size, self.stride = block_size, stride
        self.count = max(0, (len(ids) - block_size - 1) // stride + 1)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        start = index * self.stride
        window = self.ids[start:start + self.block_size + 1]
        return window[:-1], window[1:]


def split_datasets(prepared_dir: Path, meta: dict, train) -> dict[str, SplitData]:
    """Train: windows at random offsets, `train.steps_per_epoch` batches an epoch. Val and test:
    consecutive windows (the whole split is also scored as contiguous streams, the state
    carried: pipeline/kinds/generator.py)."""
    found = {}
    for split in ("train", "val", "test"):
        ids = np.load(Path(prepared_dir) / f"{split}.npy")
        found[split] = (SplitData(CharWindows(ids, train.block_size), max_batches=train.steps_per_epoch)
                        if split == "train" else SplitData(CharWindows(ids, train.block_size, stride=train.block_size)))
    return found
