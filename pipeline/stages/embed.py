"""Stage `embed@<task>`: word2vec embeddings pretrained on a text task's training split and its
unlabelled texts, for the classifiers' embedding layer.

    python -m pipeline.stages.embed <task>

One stage per task that sets `embeddings` (params.yaml derives the list, `embeds`). The texts
come from the task's data kind (`embedding_texts`): the training split only (never val or test)
and the unlabelled texts; IMDB's 50k unlabelled reviews carry most of its text. One worker
thread and a fixed hash make the vectors identical from run to run.
"""

from __future__ import annotations

import logging
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from pipeline.config import ConfigError, load_task, stage_args
from pipeline.data.registry import data_kind
from pipeline.files import atomic_dir, read_json, write_json_atomic

log = logging.getLogger(__name__)


def stable_hash(text: str) -> int:
    """gensim seeds each vector with hash(word); Python's str hash changes per process."""
    return zlib.crc32(text.encode("utf-8"))


def token_sentences(texts: list[str], prepared_dir: str | Path) -> list[list[str]]:
    """Each text as its token ids (strings, untruncated), through the task's own tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(prepared_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return [[str(i) for i in encoding.ids] for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


def train_vectors(sentences: list[list[str]], vocab_size: int, settings, seed: int) -> np.ndarray:
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
        data = data_kind(task.data)
        if getattr(task, "embeddings", None) is None or not hasattr(data, "embedding_texts"):
            raise ConfigError(f"task.{name}.embeddings: not set for this task (data kind {task.data}); "
                              "embeddings are for text tasks that set task.<name>.embeddings")
        start = time.perf_counter()
        texts = data.embedding_texts(task.paths.raw, task.prepare, task.paths.prepared)
        sentences = token_sentences(texts, task.paths.prepared)
        meta = read_json(Path(task.paths.prepared) / "meta.json")
        vectors = train_vectors(sentences, meta["vocab_size"], task.embeddings, task.embeddings.seed)
    except ValueError as exc:
        print(f"embed@{name}: {exc}", file=sys.stderr)
        return 1
    with atomic_dir(task.paths.embeddings) as tmp:
        np.save(tmp / "vectors.npy", vectors)
        write_json_atomic(tmp / "meta.json", {**task.embeddings.model_dump(), "sentences": len(sentences),
                                              "tokens": sum(map(len, sentences)), "vocab_size": len(vectors)})
    log.info("embed@%s: %d sentences, %d tokens, vectors %s in %.1fs", name, len(sentences),
             sum(map(len, sentences)), vectors.shape, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
