"""embed: word2vec vectors from the training split and unlabelled texts only, reproducibly."""

from __future__ import annotations

import numpy as np

from pipeline.data.texts import embedding_texts, prepare
from pipeline.data.texts.files import read_texts
from pipeline.data.texts_settings import EmbeddingsConfig
from pipeline.stages.embed import token_sentences, train_vectors
from tests.test_data_texts import SETTINGS as TEXTS

SETTINGS = TEXTS.model_copy(update={"vocab_size": 40, "min_freq": 1, "vocab_from_unlabelled": True})
VECTORS = EmbeddingsConfig(dim=6, window=3, epochs=2, skip_gram=False, seed=0)


def test_corpus_is_the_training_split_plus_unlabelled_texts(tmp_path, imdb_archive):
    prepare(tmp_path, SETTINGS, tmp_path / "encoded")
    corpus = token_sentences(embedding_texts(tmp_path, SETTINGS, tmp_path / "encoded"), tmp_path / "encoded")
    assert len(corpus) == 18 + len(read_texts(tmp_path, SETTINGS.read)["unlabelled"].texts)  # 24 less 6 for val
    train = np.load(tmp_path / "encoded/train.npz")
    first = [str(i) for i in train["ids"][0, :train["lengths"][0]]]
    assert corpus[0][:len(first)] == first  # the same tokenisation as the arrays


def test_vectors_are_identical_from_run_to_run_and_padding_is_zero(tmp_path, imdb_archive):
    prepare(tmp_path, SETTINGS, tmp_path / "encoded")
    corpus = token_sentences(embedding_texts(tmp_path, SETTINGS, tmp_path / "encoded"), tmp_path / "encoded")
    first = train_vectors(corpus, 40, VECTORS, seed=0)
    assert first.shape == (40, 6) and first.dtype == np.float32
    assert np.array_equal(first, train_vectors(corpus, 40, VECTORS, seed=0))
    assert not np.array_equal(first, train_vectors(corpus, 40, VECTORS, seed=1))
    assert not first[0].any()
