"""Character-level text: nanoGPT's split, a vocabulary from train only, one rule for unknown characters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.charlm_settings import CharLmPrepare
from pipeline.data.charlm import TextError, prepare
from pipeline.kinds.generator_spec import VocabularyError, bits, encode, generate, pick, stream_loss
from tests.conftest import synthetic_play

SETTINGS = CharLmPrepare(train_fraction=0.9, val_fraction=0.5)


def test_train_is_the_first_90_percent_and_the_rest_splits_into_val_then_test(tmp_path):
    text = synthetic_play(200)
    source = tmp_path / "play.txt"
    source.write_text(text, encoding="utf-8")
    card = prepare(source, SETTINGS, tmp_path / "out")
    train_end = int(len(text) * 0.9)
    val_end = train_end + (len(text) - train_end) // 2
    meta = json.loads((tmp_path / "out/meta.json").read_text())
    decoded = {split: "".join(meta["vocab"][i] for i in np.load(tmp_path / f"out/{split}.npy"))
               for split in ("train", "val", "test")}
    assert decoded == {"train": text[:train_end], "val": text[train_end:val_end], "test": text[val_end:]}
    assert meta["vocab"] == sorted(set(text[:train_end]))
    assert card["chars"] == {"train": train_end, "val": val_end - train_end, "test": len(text) - val_end}
    assert card["val10_chars"] == len(text) - train_end and card["vocab"] == "".join(meta["vocab"])
    assert len(card["source"]["sha256"]) == 64


def test_a_character_outside_the_training_vocabulary_is_an_error_naming_it_and_its_line(tmp_path):
    text = synthetic_play(200)
    cut = len(text) - 20  # inside the test split (the last 5%)
    source = tmp_path / "play.txt"
    source.write_text(text[:cut] + "\n~" + text[cut:], encoding="utf-8")
    with pytest.raises(TextError, match=r"play.txt \(test split\): 1 character\(s\) not in the vocabulary \('~' at line"):
        prepare(source, SETTINGS, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_text_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    source = tmp_path / "play.txt"
    source.write_bytes(b"ROMEO:\nfair\n\xe9te\n")
    with pytest.raises(TextError, match=r"play.txt: not UTF-8 text \(line 3"):
        prepare(source, SETTINGS, tmp_path / "out")


def test_the_deployment_path_applies_the_same_rule_to_a_prompt():
    with pytest.raises(VocabularyError, match=r"'~' are not in the model's vocabulary"):
        encode("ab~", ["a", "b"])


def uniform_step(vocab_size):
    def step(ids, state):
        return np.zeros((*ids.shape, vocab_size)), (state[0] + ids.shape[1],)
    return step


def test_a_uniform_model_scores_log_v_nats_and_the_stream_reader_carries_state():
    ids = np.arange(1001) % 7
    calls = []

    def step(ids_chunk, state):
        calls.append(state[0].copy())
        return uniform_step(7)(ids_chunk, state)

    loss = stream_loss(step, lambda batch: (np.zeros(batch),), ids, streams=4, block=64)
    assert loss == pytest.approx(np.log(7)) and bits(loss) == pytest.approx(np.log2(7))
    assert [int(c[0]) for c in calls] == [0, 64, 128, 192]  # 250 characters per stream, state carried


def test_seeded_sampling_repeats_and_greedy_takes_the_argmax():
    rng_logits = np.random.default_rng(0).standard_normal(20)

    def step(ids, state):
        return np.broadcast_to(rng_logits, (*ids.shape, 20)).copy(), state

    first = generate(step, (), np.array([1, 2]), 30, 0.8, seed=5)
    assert first == generate(step, (), np.array([1, 2]), 30, 0.8, seed=5)
    assert first != generate(step, (), np.array([1, 2]), 30, 0.8, seed=6)
    assert generate(step, (), np.array([1]), 5, 0.0, seed=1) == [int(np.argmax(rng_logits))] * 5
    top2 = set(np.argsort(rng_logits)[-2:])
    assert {pick(rng_logits, 1.0, np.random.default_rng(s), top_k=2) for s in range(50)} <= top2
