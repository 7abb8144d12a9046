"""Labelled texts for classification, any number of classes: read (files.py), split,
tokenizer and vocabulary fitted on train, encoded, a data card; the token datasets.

IMDB is one configuration of it (conf/task/imdb.yaml: the aclImdb archive, a folder per class).

The tokenizer is a Hugging Face `tokenizers` WordLevel model saved as one tokenizer.json
(normaliser, pre-tokeniser, vocabulary, truncation and padding), so the torch-free deployment
path tokenises raw text exactly as training did. Word level by default (NFKC, lowercase, words
with inner apostrophes kept whole and each punctuation mark alone); `tokenizer.level: char`
makes every character a token, for languages written without spaces.

An empty text (nothing but whitespace) is kept with its label, with a warning, and counted in
the data card (`empty`). Labels found in test or validation that train lacks, a class too small
to stratify, a file with no rows, a missing column and bytes that are not UTF-8 are refused
with a message that names the file, and nothing is written.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data import SplitData
from pipeline.data.texts.files import Texts, TextsError, read_texts
from pipeline.data.texts_settings import TextsPrepare, TextTokenizer
from pipeline.files import atomic_dir, file_digest, write_json_atomic

log = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
SPLITS = ("train", "val", "test")
# Words with inner apostrophes kept whole (didn't, rock'n'roll), and each punctuation mark alone.
TOKEN_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
CHARACTER_PATTERN = r"[\s\S]"
PERCENTILES = (50, 90, 95, 99)
AUTO_PERCENTILE, AUTO_MULTIPLE = 95, 8   # max_len: auto
NAMED = 5  # texts a warning lists by where they are


# ---- labels ---------------------------------------------------------------------------------------


def label_names(train: Texts, configured: list | None) -> list[str]:
    """The class names in id order: as configured, else train's, sorted (numbers by value)."""
    if configured is not None:
        return [str(label) for label in configured]
    found = set(train.labels)
    numeric = all(label.lstrip("-").isdigit() for label in found)
    return sorted(found, key=int) if numeric else sorted(found)


def label_ids(texts: Texts, names: list[str], split: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    unknown = [(w, label) for w, label in zip(texts.where, texts.labels) if label not in index]
    if unknown:
        where, label = unknown[0]
        raise TextsError(f"{where}: label {label!r} in {split} is not a class of train; expected one of {names} "
                         f"({len(unknown)} text(s) of {split} have such labels; set prepare.read.labels to name "
                         "every class)")
    dtype = np.int8 if len(names) <= np.iinfo(np.int8).max else np.int32
    return np.array([index[label] for label in texts.labels], dtype=dtype)


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int, names: list[str],
                    where: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of the training indices into (train, val), both sorted."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels, minlength=len(names))
    val_size = math.ceil(val_fraction * len(labels))
    small = [(names[c], int(n)) for c, n in enumerate(counts) if n < 2]
    if small or val_size < len(names) or len(labels) - val_size < len(names):
        shown = small or [(names[c], int(n)) for c, n in enumerate(counts)]
        raise TextsError(f"{where}: too few texts to carve a stratified validation split "
                         f"(val_fraction {val_fraction} of {len(labels)}) with every class on both sides: "
                         f"{dict(shown)}; expected at least 2 texts per class and one per class in each "
                         "side, or give a validation file (prepare.read.files.val)")
    index = np.arange(len(labels))
    train_idx, val_idx = train_test_split(index, test_size=val_fraction, stratify=labels,
                                          random_state=seed, shuffle=True)
    return np.sort(train_idx), np.sort(val_idx)


# ---- tokenizer ----------------------------------------------------------------------------------


def new_tokenizer(settings: TextTokenizer):
    """An untrained tokenizer: line breaks to spaces, NFKC, lowercase, then words or characters."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    steps = [normalizers.Replace(Regex(settings.breaks), " ")] if settings.breaks else []
    steps += [normalizers.NFKC()] + ([normalizers.Lowercase()] if settings.lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    if settings.level == "char":
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(CHARACTER_PATTERN), behavior="isolated")
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated"),
        ])
    return tokenizer


def build_tokenizer(texts: Iterable[str], settings: TextTokenizer, vocab_size: int, min_freq: int):
    """Fit the vocabulary: [PAD]=0, [UNK]=1, then tokens by descending frequency."""
    from tokenizers import trainers

    tokenizer = new_tokenizer(settings)
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_freq,
                                        special_tokens=[PAD, UNK], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    assert tokenizer.token_to_id(PAD) == PAD_ID and tokenizer.token_to_id(UNK) == UNK_ID
    return tokenizer


def configure_for_inference(tokenizer, max_len: int, truncation_side: str):
    """Bake truncation and padding into the tokenizer that deployment loads."""
    tokenizer.enable_truncation(max_length=max_len, direction=truncation_side)
    tokenizer.enable_padding(direction="right", pad_id=PAD_ID, pad_token=PAD)
    return tokenizer


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    return np.array([len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)], dtype=np.int32)


def auto_max_len(lengths: np.ndarray) -> int:
    """Train's 95th percentile of token lengths, rounded up to a multiple of 8: the longest 5 % are cut."""
    return max(AUTO_MULTIPLE, AUTO_MULTIPLE * math.ceil(np.percentile(lengths, AUTO_PERCENTILE) / AUTO_MULTIPLE))


@dataclass
class Encoded:
    ids: np.ndarray          # [N, max_len], right-padded with PAD_ID
    lengths: np.ndarray      # int32, tokens kept (<= max_len)
    full_lengths: np.ndarray  # int32, tokens before truncation
    unk_count: int
    token_count: int


def encode(tokenizer, texts: list[str], max_len: int, truncation_side: str) -> Encoded:
    """Encode without truncation (for length statistics), then truncate on the chosen side."""
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max + 1 else np.int32
    ids = np.full((len(texts), max_len), PAD_ID, dtype=dtype)
    lengths = np.zeros(len(texts), dtype=np.int32)
    full_lengths = np.zeros(len(texts), dtype=np.int32)
    unk_count = token_count = 0
    for row, encoding in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
        tokens = np.asarray(encoding.ids, dtype=np.int64)
        full_lengths[row] = len(tokens)
        unk_count += int((tokens == UNK_ID).sum())
        token_count += len(tokens)
        kept = tokens[:max_len] if truncation_side == "right" else tokens[max(0, len(tokens) - max_len):]
        lengths[row] = len(kept)
        ids[row, :len(kept)] = kept
    return Encoded(ids, lengths, full_lengths, unk_count, token_count)


# ---- the stage ----------------------------------------------------------------------------------


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    stats = {f"p{p}": round(float(np.percentile(lengths, p)), 1) for p in PERCENTILES}
    return {**stats, "min": int(lengths.min()), "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)}


def empty_texts(texts: Texts) -> list[str]:
    return [w for w, text in zip(texts.where, texts.texts) if not text.strip()]


def warn_empty(split: str, where: list[str]) -> None:
    if where:
        shown = ", ".join(where[:NAMED]) + (f" and {len(where) - NAMED} more" if len(where) > NAMED else "")
        log.warning("%d empty text(s) in %s, kept with their labels: %s", len(where), split, shown)


def split_card(texts: Texts, labels: np.ndarray, names: list[str], encoded: Encoded, max_len: int) -> dict:
    return {
        "count": len(texts.texts),
        **{name: int((labels == i).sum()) for i, name in enumerate(names)},
        "tokens": length_stats(encoded.full_lengths),
        "truncated_fraction": round(float((encoded.full_lengths > max_len).mean()), 4),
        "oov_rate": round(encoded.unk_count / max(encoded.token_count, 1), 5),
        "empty": len(empty_texts(texts)),
    }


def take(texts: Texts, index: np.ndarray) -> Texts:
    return Texts([texts.texts[i] for i in index], [texts.labels[i] for i in index], [texts.where[i] for i in index])


def prepare(raw: str | Path, settings: TextsPrepare, out_dir: str | Path) -> dict:
    """Read, split, fit the vocabulary on train only, encode; write arrays + tokenizer. `raw` is
    the task's raw folder. Returns the data card."""
    start = time.perf_counter()
    found = read_texts(raw, settings.read)
    log.info("read %s: %s texts in %.1fs", raw, {k: len(v.texts) for k, v in found.items() if v},
             time.perf_counter() - start)
    names = label_names(found["train"], settings.read.labels)
    labels = {split: label_ids(found[split], names, split) for split in ("train", "test", "val") if found[split]}
    rows = {"test": np.arange(len(found["test"].texts))}
    if found["val"] is None:   # carved from train; `rows` say which texts of the train file each split holds
        rows["train"], rows["val"] = split_train_val(labels["train"], settings.val_fraction, settings.split_seed,
                                                     names, f"{raw}/{settings.read.files.train}")
        splits = {"train": take(found["train"], rows["train"]), "val": take(found["train"], rows["val"]),
                  "test": found["test"]}
        labels["val"], labels["train"] = labels["train"][rows["val"]], labels["train"][rows["train"]]
    else:
        rows |= {"train": np.arange(len(found["train"].texts)), "val": np.arange(len(found["val"].texts))}
        splits = {split: found[split] for split in SPLITS}
    for split in SPLITS:
        warn_empty(split, empty_texts(splits[split]))
    unlabelled = found["unlabelled"] or Texts()
    warn_empty("unlabelled", empty_texts(unlabelled))

    vocab_texts = splits["train"].texts + (unlabelled.texts if settings.vocab_from_unlabelled else [])
    tokenizer = build_tokenizer(vocab_texts, settings.tokenizer, settings.vocab_size, settings.min_freq)
    max_len = settings.max_len if settings.max_len != "auto" else \
        auto_max_len(token_lengths(tokenizer, splits["train"].texts))
    encoded = {name: encode(tokenizer, split.texts, max_len, settings.truncation_side)
               for name, split in splits.items()}

    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            np.savez(tmp / f"{name}.npz", ids=encoded[name].ids, lengths=encoded[name].lengths,
                     labels=labels[name], rows=rows[name].astype(np.int32))
        configure_for_inference(tokenizer, max_len, settings.truncation_side)
        tokenizer.save(str(tmp / "tokenizer.json"))
        write_json_atomic(tmp / "meta.json", {
            "tokenizer": "tokenizer.json", "tokenizer_sha256": file_digest(tmp / "tokenizer.json", "sha256"),
            "vocab_size": tokenizer.get_vocab_size(), "pad_id": PAD_ID, "unk_id": UNK_ID, "max_len": max_len,
            "truncation_side": settings.truncation_side, "labels": names})

    card = {
        "splits": {name: split_card(splits[name], labels[name], names, encoded[name], max_len) for name in SPLITS},
        "labels": names,
        "val_from": "a file" if found["val"] is not None else f"train ({settings.val_fraction}, stratified)",
        "unlabelled_count": len(unlabelled.texts),
        "unlabelled_empty": len(empty_texts(unlabelled)),
        "vocab_size": tokenizer.get_vocab_size(),
        "vocab_from_unlabelled": settings.vocab_from_unlabelled,
        "max_len": max_len,
        "max_len_from": "settings" if settings.max_len != "auto" else f"p{AUTO_PERCENTILE} of train",
        "source": {p.name: file_digest(p, "sha256") for p in sorted(Path(raw).iterdir()) if p.is_file()}
        if Path(raw).is_dir() else {Path(raw).name: file_digest(raw, "sha256")},
    }
    log.info("prepared %d classes in %.1fs: vocab %d, max_len %d, %s", len(names), time.perf_counter() - start,
             card["vocab_size"], max_len, {n: (c["count"], c["oov_rate"]) for n, c in card["splits"].items()})
    return card


def items(card: dict) -> tuple[str, int]:
    """What the data card counts, for the benchmarks' prepare throughput: texts, unlabelled ones too."""
    return "texts", sum(s["count"] for s in card["splits"].values()) + card["unlabelled_count"]


def embedding_texts(raw: str | Path, settings: TextsPrepare, prepared_dir: str | Path) -> list[str]:
    """What word2vec reads (stage embed): the training split's texts (never val or test), then
    the unlabelled ones."""
    found = read_texts(raw, settings.read)
    train_rows = np.load(Path(prepared_dir) / "train.npz")["rows"]
    return [found["train"].texts[i] for i in train_rows] + (found["unlabelled"].texts if found["unlabelled"] else [])


# ---- the datasets a stage trains or scores on ---------------------------------------------------


class TokenDataset(Dataset):
    def __init__(self, ids: np.ndarray, labels: np.ndarray):
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.lengths = (self.ids != 0).sum(1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.ids[index], self.labels[index]


def trim_collate(batch):
    """Stack token rows and cut the batch to its longest row (rows are right-padded)."""
    ids = torch.stack([row for row, _ in batch])
    labels = torch.stack([label for _, label in batch])
    longest = int((ids != 0).sum(1).max().clamp(min=1))
    return ids[:, :longest], labels


def split_datasets(prepared_dir: Path, meta: dict, train) -> dict[str, SplitData]:
    """Encoded texts per split, batched by similar length and cut to the longest row."""
    found = {}
    for split in SPLITS:
        arrays = np.load(Path(prepared_dir) / f"{split}.npz")
        dataset = TokenDataset(arrays["ids"], arrays["labels"])
        found[split] = SplitData(dataset, lengths=dataset.lengths, collate=trim_collate)
    return found
