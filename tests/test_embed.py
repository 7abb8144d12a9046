"""embed: word2vec vectors from the training split and unlabelled reviews only, reproducibly."""

from __future__ import annotations

import numpy as np

from pipeline.data.imdb_settings import EmbeddingsConfig, ImdbPrepare
from pipeline.data.imdb import prepare, read_reviews
from pipeline.stages.embed import training_corpus, train_vectors

SETTINGS = ImdbPrepare(vocab_size=40, min_freq=1, vocab_from_unsup=True, max_len=16,
                       truncation_side="right", val_fraction=0.25, split_seed=0)
VECTORS = EmbeddingsConfig(dim=6, window=3, epochs=2, skip_gram=False, seed=0)


def test_corpus_is_the_training_split_plus_unlabelled_reviews(tmp_path, imdb_archive):
    prepare(imdb_archive, SETTINGS, tmp_path / "encoded")
    corpus = training_corpus(imdb_archive, tmp_path / "encoded")
    reviews = read_reviews(imdb_archive)
    assert len(corpus) == 18 + len(reviews["unsup"].texts)  # 24 train reviews less 6 for val
    train = np.load(tmp_path / "encoded/train.npz")
    first = [str(i) for i in train["ids"][0, :train["lengths"][0]]]
    assert corpus[0][:len(first)] == first  # the same tokenisation as the arrays


def test_vectors_are_identical_from_run_to_run_and_padding_is_zero(tmp_path, imdb_archive):
    prepare(imdb_archive, SETTINGS, tmp_path / "encoded")
    corpus = training_corpus(imdb_archive, tmp_path / "encoded")
    first = train_vectors(corpus, 40, VECTORS, seed=0)
    assert first.shape == (40, 6) and first.dtype == np.float32
    assert np.array_equal(first, train_vectors(corpus, 40, VECTORS, seed=0))
    assert not np.array_equal(first, train_vectors(corpus, 40, VECTORS, seed=1))
    assert not first[0].any()
