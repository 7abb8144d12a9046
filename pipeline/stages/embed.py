"""Stage `embed`: word2vec embeddings pretrained on the unlabelled and training reviews.

    python -m pipeline.stages.embed imdb

The 50k unlabelled reviews carry most of IMDB's text; word2vec (gensim) turns them into
initial word vectors for the classifiers' embedding layer. Only the training split (never
val or test) and the unlabelled reviews are read. One worker thread and a fixed hash make
the vectors identical from run to run.
"""

from __future__ import annotations

import logging
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from pipeline.config import ConfigError, load_task, stage_args
from pipeline.data.imdb import read_reviews
from pipeline.data.imdb_settings import EmbeddingsConfig
from pipeline.data.imdb_settings import Task as ImdbTask
from pipeline.files import atomic_dir, read_json, write_json_atomic

log = logging.getLogger(__name__)


def stable_hash(text: str) -> int:
    """gensim seeds each vector with hash(word); Python's str hash changes per process."""
    return zlib.crc32(text.encode("utf-8"))


def training_corpus(archive: str | Path, encoded_dir: str | Path) -> list[list[str]]:
    """Token-id sentences of the training split (val excluded) and the unlabelled reviews."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(encoded_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    train = np.load(Path(encoded_dir) / "train.npz")
    keep = set(zip(train["review_ids"].tolist(), train["labels"].tolist()))
    reviews = read_reviews(archive)
    texts = [text for text, review_id, label in zip(reviews["train"].texts, reviews["train"].ids.tolist(),
                                                    reviews["train"].labels.tolist())
             if (review_id, label) in keep] + reviews["unsup"].texts
    return [[str(i) for i in encoding.ids] for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


def train_vectors(sentences: list[list[str]], vocab_size: int, settings: EmbeddingsConfig, seed: int) -> np.ndarray:
    """[vocab_size, dim] float32: word2vec vectors where a token was seen, small noise elsewhere."""
    from gensim.models import Word2Vec

    model = Word2Vec(sentences, vector_size=settings.dim, window=settings.window, min_count=1,
                     sg=int(settings.skip_gram), epochs=settings.epochs, workers=1, seed=seed,
                     hashfxn=stable_hash)
    vectors = np.random.default_rng(seed).normal(0, 0.1, (vocab_size, settings.dim)).astype(np.float32)
    for token, index in model.wv.key_to_index.items():
        vectors[int(token)] = model.wv.vectors[index]
    vectors[0] = 0.0  # [PAD]
    return vectors


def main(argv: list[str] | None = None) -> int:
    (name,) = stage_args("pipeline.stages.embed", ["task"], argv)
    try:
        _, task = load_task(name)
        if not isinstance(task, ImdbTask):
            raise ConfigError(f"task.{name} is not a text task (kind {task.data}); embeddings are for "
                              "labelled-review tasks (pipeline/data/imdb.py)")
        start = time.perf_counter()
        sentences = training_corpus(task.paths.raw, task.paths.prepared)
        meta = read_json(Path(task.paths.prepared) / "meta.json")
        vectors = train_vectors(sentences, meta["vocab_size"], task.embeddings, task.embeddings.seed)
    except ValueError as exc:
        print(f"embed: {exc}", file=sys.stderr)
        return 1
    with atomic_dir(task.paths.embeddings) as tmp:
        np.save(tmp / "vectors.npy", vectors)
        write_json_atomic(tmp / "meta.json", {**task.embeddings.model_dump(), "sentences": len(sentences),
                                              "tokens": sum(map(len, sentences)), "vocab_size": len(vectors)})
    log.info("embed %s: %d sentences, %d tokens, vectors %s in %.1fs", name, len(sentences),
             sum(map(len, sentences)), vectors.shape, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
