"""IMDB reviews: safe archive reading, tokenizer and vocabulary, encoding, split, data card.

The tokenizer is a Hugging Face `tokenizers` WordLevel model saved as one tokenizer.json
(normaliser, pre-tokeniser, vocabulary, truncation and padding), so the torch-free
deployment path tokenises raw text exactly as training did.

Damaged input:
- A truncated or corrupt archive (a download cut short) is a `DamagedArchiveError` that names
  the archive and says to delete it and fetch it again.
- A review that is not valid UTF-8 is kept: the undecodable bytes are replaced with U+FFFD,
  one warning names the first members affected, and the data card counts such reviews
  (`invalid_utf8` in each split, `unsup_invalid_utf8` for the unlabelled ones).
- An empty review (nothing but whitespace) is kept with its label, with a warning, and counted
  the same way (`empty`, `unsup_empty`).
"""

from __future__ import annotations

import logging
import re
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.imdb_settings import ImdbPrepare
from pipeline.data import SplitData
from pipeline.files import atomic_dir, file_digest, write_json_atomic

log = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
LABELS = ("neg", "pos")  # index = class id
SPLITS = ("train", "val", "test")
MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
# Words with inner apostrophes kept whole (didn't, rock'n'roll), and each punctuation mark alone.
TOKEN_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
LINE_BREAK_PATTERN = r"<br\s*/?>"
PERCENTILES = (50, 90, 95, 99)
# What reading a cut or damaged gzip/tar stream raises (gzip.BadGzipFile is an OSError).
DAMAGED_STREAM = (EOFError, OSError, tarfile.TarError, zlib.error)
REFETCH = "delete it and fetch it again (dvc repro -f fetch@imdb)"
CHUNK = 1 << 20
NAMED_MEMBERS = 5  # members a warning lists by name


class UnsafeArchiveError(ValueError):
    """An archive member that would land outside the extraction folder."""


class DamagedArchiveError(ValueError):
    """An archive that cannot be read to its end: truncated or corrupt."""


@dataclass
class Reviews:
    texts: list[str]
    labels: np.ndarray   # int8, 0 = neg, 1 = pos, -1 = unlabelled
    ids: np.ndarray      # int32, the review id from the file name
    ratings: np.ndarray  # int8, the star rating from the file name (0 for unlabelled)
    invalid_utf8: np.ndarray  # bool, bytes that were not UTF-8 were replaced with U+FFFD

    def take(self, index: np.ndarray) -> "Reviews":
        return Reviews([self.texts[i] for i in index], self.labels[index],
                       self.ids[index], self.ratings[index], self.invalid_utf8[index])

    def empty_count(self) -> int:
        return sum(not text.strip() for text in self.texts)


# ---- reading --------------------------------------------------------------------------


def check_member(member: tarfile.TarInfo, archive: str | Path, dest: str = "/extract") -> None:
    """Refuse absolute names, `..` escapes and links pointing outside the target folder."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    try:
        tarfile.data_filter(member, dest)  # the standard library's checks for `..` and links
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"{archive}: member {name!r} is unsafe ({exc}); refusing to extract") from None


def damaged(archive: str | Path, exc: BaseException) -> DamagedArchiveError:
    return DamagedArchiveError(f"{archive}: the archive is truncated or corrupt "
                               f"({type(exc).__name__}: {exc}); {REFETCH}")


def decode_review(data: bytes) -> tuple[str, bool]:
    """UTF-8 text, and whether undecodable bytes had to be replaced with U+FFFD."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def warn_members(archive: str | Path, names: list[str], what: str) -> None:
    if names:
        shown = ", ".join(names[:NAMED_MEMBERS]) + (f" and {len(names) - NAMED_MEMBERS} more"
                                                     if len(names) > NAMED_MEMBERS else "")
        log.warning("%s: %d review(s) %s: %s", archive, len(names), what, shown)


def read_reviews(archive: str | Path) -> dict[str, Reviews]:
    """Read aclImdb reviews straight from the tar.gz stream (no 100k small files on disk).

    Every member is checked before anything is read, as a safe extraction would.
    Returns {"train", "test", "unsup"} sorted by (label, id) so that order never depends on
    the archive's packing.
    """
    rows: dict[str, list[tuple[int, int, int, str, bool]]] = {"train": [], "test": [], "unsup": []}
    label_of = {"neg": 0, "pos": 1, "unsup": -1}
    invalid, empty = [], []
    try:
        tar = tarfile.open(archive, "r:*")
    except (EOFError, zlib.error) as exc:  # a gzip stream that ends inside the first tar block
        raise damaged(archive, exc) from None
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"{archive}: cannot open as a tar archive ({exc}); {REFETCH}") from None
    with tar:
        try:
            for member in tar:
                check_member(member, archive)
                match = MEMBER.match(member.name)
                if not match or not member.isfile():
                    continue
                split, label, review_id, rating = match.groups()
                text, replaced = decode_review(tar.extractfile(member).read())
                if replaced:
                    invalid.append(member.name)
                if not text.strip():
                    empty.append(member.name)
                split = "unsup" if label == "unsup" else split
                rows[split].append((label_of[label], int(review_id), int(rating), text, replaced))
            # tarfile stops at its end-of-archive block and a damaged header can look like one;
            # reading on to the end makes gzip check its CRC and length.
            while tar.fileobj.read(CHUNK):
                pass
        except DAMAGED_STREAM as exc:  # a stream cut short only shows up once it is read
            raise damaged(archive, exc) from None
    warn_members(archive, invalid, "are not valid UTF-8; kept with the undecodable bytes "
                 "replaced by U+FFFD")
    warn_members(archive, empty, "are empty; kept with their labels")
    missing = [s for s in ("train", "test") if not rows[s]]
    if missing:
        raise ValueError(f"{archive}: no reviews found for {missing}; expected members like "
                         "aclImdb/train/pos/<id>_<rating>.txt")
    out = {}
    for split, items in rows.items():
        items.sort(key=lambda r: (r[0], r[1]))
        out[split] = Reviews(
            texts=[r[3] for r in items],
            labels=np.array([r[0] for r in items], dtype=np.int8),
            ids=np.array([r[1] for r in items], dtype=np.int32),
            ratings=np.array([r[2] for r in items], dtype=np.int8),
            invalid_utf8=np.array([r[4] for r in items], dtype=bool),
        )
    return out


# ---- tokenizer ------------------------------------------------------------------------


def new_tokenizer():
    """An untrained word-level tokenizer: strip <br />, NFKC, lowercase, words + punctuation."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(LINE_BREAK_PATTERN), " "),
        normalizers.NFKC(),
        normalizers.Lowercase(),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated"),
    ])
    return tokenizer


def build_tokenizer(texts: Iterable[str], vocab_size: int, min_freq: int):
    """Fit the vocabulary: [PAD]=0, [UNK]=1, then words by descending frequency."""
    from tokenizers import trainers

    tokenizer = new_tokenizer()
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


# ---- split ----------------------------------------------------------------------------


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of the training indices into (train, val), both sorted."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train_idx, val_idx = train_test_split(index, test_size=val_fraction, stratify=labels,
                                          random_state=seed, shuffle=True)
    return np.sort(train_idx), np.sort(val_idx)


# ---- the stage ------------------------------------------------------------------------


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    stats = {f"p{p}": round(float(np.percentile(lengths, p)), 1) for p in PERCENTILES}
    return {**stats, "min": int(lengths.min()), "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)}


def split_card(reviews: Reviews, encoded: Encoded, max_len: int) -> dict:
    return {
        "count": len(reviews.texts),
        **{label: int((reviews.labels == i).sum()) for i, label in enumerate(LABELS)},
        "tokens": length_stats(encoded.full_lengths),
        "truncated_fraction": round(float((encoded.full_lengths > max_len).mean()), 4),
        "oov_rate": round(encoded.unk_count / max(encoded.token_count, 1), 5),
        "empty": reviews.empty_count(),
        "invalid_utf8": int(reviews.invalid_utf8.sum()),
    }


def prepare(archive: str | Path, settings: ImdbPrepare, out_dir: str | Path) -> dict:
    """Read, split, fit the vocabulary on train only, encode; write arrays + tokenizer.

    Returns the data card.
    """
    start = time.perf_counter()
    reviews = read_reviews(archive)
    log.info("read %s: %s reviews in %.1fs", archive,
             {k: len(v.texts) for k, v in reviews.items()}, time.perf_counter() - start)

    train_idx, val_idx = split_train_val(reviews["train"].labels, settings.val_fraction,
                                         settings.split_seed)
    splits = {"train": reviews["train"].take(train_idx), "val": reviews["train"].take(val_idx),
              "test": reviews["test"]}

    vocab_texts = splits["train"].texts + (reviews["unsup"].texts if settings.vocab_from_unsup else [])
    tokenizer = build_tokenizer(vocab_texts, settings.vocab_size, settings.min_freq)
    encoded = {name: encode(tokenizer, split.texts, settings.max_len, settings.truncation_side)
               for name, split in splits.items()}

    with atomic_dir(out_dir) as tmp:
        for name, split in splits.items():
            np.savez(tmp / f"{name}.npz", ids=encoded[name].ids, lengths=encoded[name].lengths,
                     labels=split.labels, review_ids=split.ids, ratings=split.ratings)
        configure_for_inference(tokenizer, settings.max_len, settings.truncation_side)
        tokenizer.save(str(tmp / "tokenizer.json"))
        meta = {
            "tokenizer": "tokenizer.json",
            "tokenizer_sha256": file_digest(tmp / "tokenizer.json", "sha256"),
            "vocab_size": tokenizer.get_vocab_size(),
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "max_len": settings.max_len,
            "truncation_side": settings.truncation_side,
            "labels": list(LABELS),
        }
        write_json_atomic(tmp / "meta.json", meta)

    seconds = time.perf_counter() - start
    card = {
        "splits": {name: split_card(splits[name], encoded[name], settings.max_len) for name in SPLITS},
        "unsup_count": len(reviews["unsup"].texts),
        "unsup_empty": reviews["unsup"].empty_count(),
        "unsup_invalid_utf8": int(reviews["unsup"].invalid_utf8.sum()),
        "vocab_size": tokenizer.get_vocab_size(),
        "vocab_from_unsup": settings.vocab_from_unsup,
        "max_len": settings.max_len,
        "source": {"file": Path(archive).name, "sha256": file_digest(archive, "sha256")},
    }
    log.info("prepared IMDB in %.1fs: vocab %d, %s", seconds, card["vocab_size"],
             {n: (c["count"], c["oov_rate"]) for n, c in card["splits"].items()})
    return card


def items(card: dict) -> tuple[str, int]:
    """What the data card counts, for the benchmarks' prepare throughput: reviews, unlabelled ones too."""
    return "reviews", sum(s["count"] for s in card["splits"].values()) + card["unsup_count"]


# ---- the datasets a stage trains or scores on -------------------------------------------------


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
    """Encoded reviews per split, batched by similar length and cut to the longest row."""
    found = {}
    for split in SPLITS:
        arrays = np.load(Path(prepared_dir) / f"{split}.npz")
        dataset = TokenDataset(arrays["ids"], arrays["labels"])
        found[split] = SplitData(dataset, lengths=dataset.lengths, collate=trim_collate)
    return found
