"""IMDB: safe archive reading, tokenizer, vocabulary, encoding, split, outputs and data card."""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile

import numpy as np
import pytest
from tokenizers import Tokenizer

from pipeline.data.imdb_settings import ImdbPrepare
from pipeline.data.imdb import (PAD_ID, UNK_ID, DamagedArchiveError, UnsafeArchiveError,
                                build_tokenizer, encode, new_tokenizer, prepare, read_reviews,
                                split_train_val)
from tests.conftest import add_member, imdb_reviews, make_imdb_archive

SETTINGS = ImdbPrepare(vocab_size=20, min_freq=2, vocab_from_unsup=False, max_len=16,
                       truncation_side="right", val_fraction=0.25, split_seed=0)


def words(tokenizer, text: str) -> list[str]:
    return [token for token, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text))]


def test_tokenizer_strips_line_breaks_lowercases_and_splits_punctuation():
    tokens = words(new_tokenizer(), "Great<br />movie!! I didn't LIKE it<br/>, 10/10")
    assert tokens == ["great", "movie", "!", "!", "i", "didn't", "like", "it", ",", "10", "/", "10"]


def test_vocabulary_respects_size_min_frequency_and_special_ids():
    texts = ["a a a a b b b c c d"] * 1 + ["e"]
    tokenizer = build_tokenizer(texts, vocab_size=5, min_freq=2)
    vocab = tokenizer.get_vocab()
    assert vocab["[PAD]"] == PAD_ID and vocab["[UNK]"] == UNK_ID
    assert set(vocab) == {"[PAD]", "[UNK]", "a", "b", "c"}  # size 5; d and e are too rare
    assert vocab["a"] < vocab["b"] < vocab["c"]  # by frequency
    assert set(build_tokenizer(texts, vocab_size=100, min_freq=1).get_vocab()) >= {"d", "e"}


def test_vocabulary_does_not_depend_on_input_order():
    texts = [" ".join(f"w{i % k}" for i in range(30)) for k in range(2, 12)]
    first = build_tokenizer(texts, 8, 1).get_vocab()
    assert build_tokenizer(texts[::-1], 8, 1).get_vocab() == first


@pytest.mark.parametrize("side, expected", [("right", [2, 3, 4]), ("left", [4, 5, 6])])
def test_encoding_truncates_on_the_chosen_side_pads_and_maps_unknowns(side, expected):
    tokenizer = build_tokenizer(["a b c d e"] * 2, vocab_size=10, min_freq=1)
    ids = {w: tokenizer.token_to_id(w) for w in "abcde"}
    assert [ids[w] for w in "abcde"] == [2, 3, 4, 5, 6]
    encoded = encode(tokenizer, ["a b c d e", "b zzz"], max_len=3, truncation_side=side)
    assert encoded.ids[0].tolist() == expected
    assert encoded.ids[1].tolist() == [3, UNK_ID, PAD_ID]
    assert encoded.lengths.tolist() == [3, 2]
    assert encoded.full_lengths.tolist() == [5, 2]
    assert (encoded.unk_count, encoded.token_count) == (1, 7)
    assert encoded.ids.dtype == np.uint16


def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.array([0] * 60 + [1] * 40, dtype=np.int8)
    train, val = split_train_val(labels, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(100))
    assert (labels[val] == 1).sum() == 8  # 40 % of the val rows, as in the whole
    again, _ = split_train_val(labels, 0.2, seed=3)
    other, _ = split_train_val(labels, 0.2, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_read_reviews_reads_every_split_and_ignores_other_members(imdb_archive):
    reviews = read_reviews(imdb_archive)
    assert {k: len(v.texts) for k, v in reviews.items()} == {"train": 24, "test": 24, "unsup": 10}
    assert reviews["train"].labels.tolist() == [0] * 12 + [1] * 12
    assert (reviews["unsup"].labels == -1).all()
    assert reviews["test"].ratings[reviews["test"].labels == 1].min() >= 7


# ---- unsafe archives ------------------------------------------------------------------


def crafted_archive(path, member: tarfile.TarInfo):
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, "aclImdb/train/pos/0_9.txt", "fine")
        tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    return path


def file_member(name):
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


def link_member(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, reason", [
    (file_member("/etc/cron.d/evil"), "absolute path"),
    (file_member("aclImdb/../../evil.txt"), "outside the destination"),
    (file_member("../evil.txt"), "outside the destination"),
    (link_member("aclImdb/train/pos/1_9.txt", "/etc/passwd"), "absolute path"),
    (link_member("aclImdb/link", "../../../etc/passwd"), "outside the destination"),
    (link_member("aclImdb/hard", "../../etc/passwd", tarfile.LNKTYPE), "outside the destination"),
])
def test_unsafe_members_are_refused_with_a_clear_error(tmp_path, member, reason):
    archive = crafted_archive(tmp_path / "evil.tar.gz", member)
    with pytest.raises(UnsafeArchiveError) as caught:
        read_reviews(archive)
    message = str(caught.value)
    assert str(archive) in message and repr(member.name) in message and "refusing" in message
    assert reason in message, message


# ---- the whole preparation ------------------------------------------------------------


@pytest.fixture
def prepared(tmp_path, imdb_archive):
    out = tmp_path / "prepared"
    card = prepare(imdb_archive, SETTINGS, out)
    return out, card


def test_outputs_are_compact_arrays_plus_a_tokenizer_and_metadata(prepared):
    out, _ = prepared
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.npz", "tokenizer.json",
                                                     "train.npz", "val.npz"]
    train = np.load(out / "train.npz")
    assert train["ids"].dtype == np.uint16 and train["ids"].shape == (18, 16)
    assert train["labels"].dtype == np.int8
    meta = json.loads((out / "meta.json").read_text())
    assert meta | {"tokenizer_sha256": None} == {
        "tokenizer": "tokenizer.json", "tokenizer_sha256": None, "vocab_size": 20, "pad_id": 0,
        "unk_id": 1, "max_len": 16, "truncation_side": "right", "labels": ["neg", "pos"]}


def test_saved_tokenizer_reproduces_the_arrays_without_torch(prepared, imdb_archive):
    out, _ = prepared
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    test = np.load(out / "test.npz")
    texts = read_reviews(imdb_archive)["test"].texts
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([np.pad(e.ids, (0, 16 - len(e.ids))) for e in encodings])
    assert np.array_equal(ids, test["ids"])
    assert [sum(e.attention_mask) for e in encodings] == test["lengths"].tolist()


def test_vocabulary_comes_from_the_training_split_only(tmp_path, imdb_archive):
    reviews = read_reviews(imdb_archive)
    for from_unsup in (False, True):
        out = tmp_path / f"unsup-{from_unsup}"
        prepare(imdb_archive, SETTINGS.model_copy(update={"vocab_from_unsup": from_unsup,
                                                          "vocab_size": 1000, "min_freq": 1}), out)
        vocab = set(Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab())
        train_ids = np.load(out / "train.npz")["review_ids"]
        train_labels = np.load(out / "train.npz")["labels"]
        train_texts = [t for t, i, l in zip(reviews["train"].texts, reviews["train"].ids, reviews["train"].labels)
                       if any((train_ids == i) & (train_labels == l))]
        allowed = {w for text in train_texts + (reviews["unsup"].texts if from_unsup else [])
                   for w in words(new_tokenizer(), text)}
        assert vocab - {"[PAD]", "[UNK]"} == allowed
        assert "testonlyword" not in vocab
        assert ("unsuponlyword" in vocab) is from_unsup


def test_splits_are_disjoint_and_test_is_untouched(prepared, imdb_archive):
    out, card = prepared
    splits = {name: np.load(out / f"{name}.npz") for name in ("train", "val", "test")}
    key = lambda s: set(zip(s["review_ids"].tolist(), s["labels"].tolist()))  # noqa: E731
    assert key(splits["train"]).isdisjoint(key(splits["val"]))
    assert len(key(splits["train"]) | key(splits["val"])) == 24
    test = read_reviews(imdb_archive)["test"]
    assert splits["test"]["review_ids"].tolist() == test.ids.tolist()
    assert splits["test"]["labels"].tolist() == test.labels.tolist()
    assert [card["splits"][n]["count"] for n in ("train", "val", "test")] == [18, 6, 24]
    assert card["splits"]["val"]["pos"] == card["splits"]["val"]["neg"] == 3


def test_data_card_holds_counts_lengths_oov_vocab_and_checksum(prepared, imdb_archive):
    _, card = prepared
    import hashlib
    assert card["source"]["sha256"] == hashlib.sha256(imdb_archive.read_bytes()).hexdigest()
    assert card["vocab_size"] == 20 and card["unsup_count"] == 10
    test = card["splits"]["test"]
    assert set(test) == {"count", "neg", "pos", "tokens", "truncated_fraction", "oov_rate",
                         "empty", "invalid_utf8"}
    assert all(card["splits"][n]["empty"] == card["splits"][n]["invalid_utf8"] == 0
               for n in ("train", "val", "test"))
    assert card["unsup_empty"] == card["unsup_invalid_utf8"] == 0
    assert set(test["tokens"]) == {"p50", "p90", "p95", "p99", "min", "max", "mean"}
    assert test["tokens"]["p50"] <= test["tokens"]["p99"] <= test["tokens"]["max"]
    assert 0 < test["oov_rate"] < 1 and 0 < test["truncated_fraction"] <= 1
    assert card["splits"]["train"]["oov_rate"] < test["oov_rate"]  # the marker words are unknown


def test_archive_without_reviews_is_a_clear_error(tmp_path):
    archive = make_imdb_archive(tmp_path / "empty.tar.gz", members={})
    with pytest.raises(ValueError, match=re.escape("no reviews found for ['train', 'test']")):
        read_reviews(archive)


def test_a_file_that_is_not_an_archive_is_named(tmp_path):
    bad = tmp_path / "aclImdb_v1.tar.gz"
    bad.write_text("not a tarball")
    with pytest.raises(ValueError, match="cannot open as a tar archive"):
        read_reviews(bad)


# ---- damaged input --------------------------------------------------------------------


def zero_the_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(16) + data[middle + 16:]


@pytest.mark.parametrize("damage", [
    lambda data: data[:len(data) * 6 // 10],  # a download cut short
    lambda data: data[:len(data) // 100],      # ends inside the first tar block
    lambda data: data[:-4],                    # only the gzip trailer is missing
    zero_the_middle,                           # the same length, a CRC that does not match
], ids=["cut-at-60%", "cut-at-1%", "cut-trailer", "zeroed-bytes"])
def test_a_truncated_or_corrupt_archive_is_named_with_the_fix_and_leaves_no_output(tmp_path, damage):
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    archive.write_bytes(damage(archive.read_bytes()))
    with pytest.raises(DamagedArchiveError) as caught:
        prepare(archive, SETTINGS, tmp_path / "prepared")
    message = str(caught.value)
    assert str(archive) in message and "truncated or corrupt" in message, message
    assert "delete it and fetch it again" in message and "fetch@imdb" in message
    assert sorted(tmp_path.iterdir()) == [archive]  # no output folder, no temporary one


def archive_with_raw(path, raw: dict[str, bytes]):
    """The usual fixture reviews plus members written as raw bytes (add_member encodes text)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in imdb_reviews().items():
            add_member(tar, name, text)
        for name, data in raw.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def prepare_warned(archive, folder, caplog) -> tuple[dict, list[str]]:
    """The data card, and the warnings the preparation logged."""
    with caplog.at_level(logging.WARNING, logger="pipeline.data.imdb"):
        card = prepare(archive, SETTINGS, folder)
    return card, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_invalid_utf8_is_replaced_counted_per_split_and_the_members_named(tmp_path, caplog):
    raw = {"aclImdb/test/pos/100_9.txt": b"Caf\xe9 was great",
           "aclImdb/train/neg/100_2.txt": b"awful \xff\xfe film",
           "aclImdb/train/unsup/100_0.txt": b"\xe9t\xe9"}
    archive = archive_with_raw(tmp_path / "aclImdb_v1.tar.gz", raw)
    card, warnings = prepare_warned(archive, tmp_path / "prepared", caplog)
    splits = card["splits"]
    assert splits["test"]["invalid_utf8"] == 1 and card["unsup_invalid_utf8"] == 1
    assert splits["train"]["invalid_utf8"] + splits["val"]["invalid_utf8"] == 1
    assert [splits[n]["count"] for n in ("train", "val", "test")] == [18, 7, 25]  # all kept
    assert "Caf\ufffd was great" in read_reviews(archive)["test"].texts
    assert len(warnings) == 1 and "U+FFFD" in warnings[0], warnings
    assert all(name in warnings[0] for name in raw)


def test_empty_reviews_are_kept_with_their_labels_counted_and_named(tmp_path, caplog):
    members = imdb_reviews()
    members |= {"aclImdb/test/neg/100_1.txt": "", "aclImdb/train/pos/100_10.txt": " \n\t ",
                "aclImdb/train/unsup/100_0.txt": ""}
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz", members)
    card, warnings = prepare_warned(archive, tmp_path / "prepared", caplog)
    splits = card["splits"]
    assert splits["test"]["empty"] == 1 and card["unsup_empty"] == 1
    assert splits["train"]["empty"] + splits["val"]["empty"] == 1
    test = read_reviews(archive)["test"]
    assert test.labels[test.texts.index("")] == 0  # neg, as its folder says
    assert len(warnings) == 1 and "empty" in warnings[0], warnings
    assert all(name in warnings[0] for name in list(members)[-3:])
