"""Labelled texts: every format read to the same texts, safe archives, tokenizer, vocabulary,
encoding, split, outputs, data card, and each bad input refused by name with nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer

from pipeline.data.texts import (PAD_ID, UNK_ID, auto_max_len, build_tokenizer, encode, label_names,
                                 new_tokenizer, prepare, split_train_val)
from pipeline.data.texts.files import DamagedSourceError, Texts, TextsError, read_texts
from pipeline.data.texts_settings import TextFiles, TextRead, TextsPrepare, TextTokenizer
from tests.conftest import add_member, imdb_reviews, make_imdb_archive

IMDB_FILES = TextFiles(train="aclImdb_v1.tar.gz/aclImdb/train", test="aclImdb_v1.tar.gz/aclImdb/test",
                       unlabelled="aclImdb_v1.tar.gz/aclImdb/train/unsup")
IMDB_READ = TextRead(format="folders", files=IMDB_FILES, labels=["neg", "pos"])
SETTINGS = TextsPrepare(read=IMDB_READ, vocab_size=20, min_freq=2, vocab_from_unlabelled=False, max_len=16,
                        truncation_side="right", val_fraction=0.25, split_seed=0)
WORDS = TextTokenizer()

# A small three-class corpus with string labels, written in every format below.
CLASSES = ("sport", "politics", "weather")
VOCAB = {"sport": "goal match team score", "politics": "vote law party senate", "weather": "rain sun wind cloud"}


def corpus(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(label, " ".join(rng.choice(VOCAB[label].split() + ["the", "a", "today"], 6)))
            for label in CLASSES for _ in range(n)]


def words(tokenizer, text: str) -> list[str]:
    return [token for token, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text))]


def write_split(folder, name: str, rows: list[tuple[str, str]], fmt: str):
    """rows of (label, text) as `fmt`; returns the file's name."""
    frame = pd.DataFrame({"text": [t for _, t in rows], "label": [lb for lb, _ in rows]})
    if fmt == "csv":
        frame.to_csv(folder / f"{name}.csv", index=False)
    elif fmt == "tsv":
        frame[["label", "text"]].to_csv(folder / f"{name}.tsv", sep="\t", index=False, header=False)
    elif fmt == "jsonl":
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": t, "label": lb}) + "\n" for lb, t in rows))
    elif fmt == "parquet":
        frame.to_parquet(folder / f"{name}.parquet")
    elif fmt == "lines":
        (folder / f"{name}.txt").write_text("".join(f"{lb} {t}\n" for lb, t in rows))
    elif fmt == "folders":
        for i, (label, text) in enumerate(rows):
            (folder / name / label).mkdir(parents=True, exist_ok=True)
            (folder / name / label / f"{i}.txt").write_text(text)
        return name
    return {"csv": f"{name}.csv", "tsv": f"{name}.tsv", "jsonl": f"{name}.jsonl", "parquet": f"{name}.parquet",
            "lines": f"{name}.txt"}[fmt]


def table_settings(fmt: str, train: str, test: str, **read) -> TextsPrepare:
    extra = {"text": 1, "label": 0, "header": False} if fmt == "tsv" else {}
    return TextsPrepare(read=TextRead(format=fmt, files=TextFiles(train=train, test=test), **(extra | read)),
                        vocab_size=100, min_freq=1, max_len=8, val_fraction=0.2)


# ---- every format -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "lines", "folders"])
def test_every_format_gives_the_same_texts_labels_and_arrays(tmp_path, fmt):
    train, test = corpus(10, 0), corpus(4, 1)
    raw = tmp_path / "raw"
    raw.mkdir()
    settings = table_settings(fmt, write_split(raw, "train", train, fmt), write_split(raw, "test", test, fmt),
                              labels=list(CLASSES))
    found = read_texts(raw, settings.read)
    order = sorted(range(len(train)), key=lambda i: (CLASSES.index(train[i][0]), i)) if fmt == "folders" \
        else range(len(train))   # folders: class by class, files in name order
    assert found["train"].texts == [train[i][1] for i in order]
    assert found["train"].labels == [train[i][0] for i in order]
    card = prepare(raw, settings, tmp_path / "out")
    assert card["labels"] == list(CLASSES) and card["splits"]["test"]["count"] == 12
    assert [card["splits"]["test"][c] for c in CLASSES] == [4, 4, 4]
    meta = json.loads((tmp_path / "out/meta.json").read_text())
    assert meta["labels"] == list(CLASSES)
    reference = tmp_path / "reference"
    if fmt != "csv":   # the same data as a CSV gives the same test arrays
        write_split(reference.mkdir() or reference, "train", train, "csv")
        write_split(reference, "test", test, "csv")
        prepare(reference, table_settings("csv", "train.csv", "test.csv", labels=list(CLASSES)), tmp_path / "ref")
        if fmt != "folders":
            assert np.array_equal(np.load(tmp_path / "out/test.npz")["ids"], np.load(tmp_path / "ref/test.npz")["ids"])


def test_a_zip_archive_is_entered_like_a_folder(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with zipfile.ZipFile(raw / "data.zip", "w") as package:
        for name, rows in (("train", corpus(5, 0)), ("test", corpus(2, 1))):
            package.writestr(f"kaggle/{name}.csv", pd.DataFrame({"text": [t for _, t in rows],
                                                                  "label": [lb for lb, _ in rows]}).to_csv(index=False))
    found = read_texts(raw, TextRead(format="csv", files=TextFiles(train="data.zip/kaggle/train.csv",
                                                                    test="data.zip/kaggle/test.csv")))
    assert len(found["train"].texts) == 15 and len(found["test"].texts) == 6


def test_labels_default_to_trains_sorted_numbers_by_value():
    assert label_names(Texts(["a"] * 3, ["10", "2", "1"], [""] * 3), None) == ["1", "2", "10"]
    assert label_names(Texts(["a"] * 2, ["pos", "neg"], [""] * 2), None) == ["neg", "pos"]
    assert label_names(Texts(["a"] * 2, ["pos", "neg"], [""] * 2), ["pos", "neg"]) == ["pos", "neg"]


def test_integer_labels_in_json_lines_are_names(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, n in (("train", 6), ("test", 2)):
        (raw / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"w{i % 3} x", "label": i % 3}) + "\n"
                                                   for i in range(n * 3)))
    prepare(raw, table_settings("jsonl", "train.jsonl", "test.jsonl"), tmp_path / "out")
    assert json.loads((tmp_path / "out/meta.json").read_text())["labels"] == ["0", "1", "2"]


def test_a_validation_file_is_used_as_given(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, seed in (("train", 0), ("val", 2), ("test", 1)):
        write_split(raw, name, corpus(3, seed), "csv")
    settings = table_settings("csv", "train.csv", "test.csv").model_copy(update={"read": TextRead(
        format="csv", files=TextFiles(train="train.csv", val="val.csv", test="test.csv"))})
    card = prepare(raw, settings, tmp_path / "out")
    assert card["val_from"] == "a file" and card["splits"]["train"]["count"] == card["splits"]["val"]["count"] == 9


# ---- bad input: named, and nothing written ----------------------------------------------------------


def refused(tmp_path, settings, raw) -> str:
    with pytest.raises(TextsError) as caught:
        prepare(raw, settings, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    return str(caught.value)


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    write_split(folder, "train", corpus(5, 0), "csv")
    write_split(folder, "test", corpus(2, 1), "csv")
    return folder


def test_a_missing_column_lists_the_columns_found(tmp_path, raw):
    message = refused(tmp_path, table_settings("csv", "train.csv", "test.csv", text="review"), raw)
    assert "train.csv" in message and "'review'" in message and "['text', 'label']" in message


def test_a_label_in_test_that_train_lacks_is_named(tmp_path, raw):
    (raw / "test.csv").write_text("text,label\nfine words,sport\nsomething new,finance\n")
    message = refused(tmp_path, table_settings("csv", "train.csv", "test.csv"), raw)
    assert "test.csv line 3" in message and "'finance'" in message and "sport" in message


def test_a_class_too_small_to_stratify_is_named(tmp_path, raw):
    with open(raw / "train.csv", "a") as handle:
        handle.write("lonely text,finance\n")
    (raw / "test.csv").write_text("text,label\nfine words,sport\n")
    message = refused(tmp_path, table_settings("csv", "train.csv", "test.csv"), raw)
    assert "'finance': 1" in message and "stratified" in message and "files.val" in message


def test_a_file_with_no_rows_is_named(tmp_path, raw):
    (raw / "test.csv").write_text("text,label\n")
    message = refused(tmp_path, table_settings("csv", "train.csv", "test.csv"), raw)
    assert "test.csv" in message and "no rows" in message
    (raw / "test.csv").write_text("")
    assert "no rows" in refused(tmp_path, table_settings("csv", "train.csv", "test.csv"), raw)


def test_bytes_that_are_not_utf8_are_refused_by_line(tmp_path, raw):
    (raw / "test.csv").write_bytes(b"text,label\nfine,sport\ncaf\xe9 noir,sport\n")
    message = refused(tmp_path, table_settings("csv", "train.csv", "test.csv"), raw)
    assert "test.csv" in message and "line 3" in message and "UTF-8" in message


def test_a_missing_file_lists_what_the_raw_folder_holds(tmp_path, raw):
    message = refused(tmp_path, table_settings("csv", "train.csv", "tset.csv"), raw)
    assert "tset.csv: not found" in message and "'test.csv'" in message


def test_a_jsonl_line_without_the_field_is_named(tmp_path, raw):
    (raw / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n')
    (raw / "test.jsonl").write_text('{"text": "a", "label": "x"}\n')
    message = refused(tmp_path, table_settings("jsonl", "train.jsonl", "test.jsonl"), raw)
    assert "train.jsonl line 2" in message and "'text'" in message and "['body', 'label']" in message


def test_empty_texts_are_kept_with_their_labels_counted_and_named(tmp_path, raw, caplog):
    (raw / "test.csv").write_text('text,label\nfine words,sport\n"  ",weather\n')
    with caplog.at_level(logging.WARNING, logger="pipeline.data.texts"):
        card = prepare(raw, table_settings("csv", "train.csv", "test.csv"), tmp_path / "out")
    assert card["splits"]["test"]["empty"] == 1 and card["splits"]["test"]["count"] == 2
    assert any("test.csv line 3" in r.getMessage() for r in caplog.records)


# ---- IMDB's layout: a folder per class inside a tar.gz -------------------------------------------------


@pytest.fixture
def imdb_raw(tmp_path):
    make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    return tmp_path


def test_the_imdb_layout_reads_every_split_and_ignores_other_members(imdb_raw):
    found = read_texts(imdb_raw, IMDB_READ)
    assert {k: len(v.texts) for k, v in found.items() if v} == {"train": 24, "test": 24, "unlabelled": 10}
    assert found["train"].labels == ["neg"] * 12 + ["pos"] * 12
    assert found["train"].where[0].endswith("aclImdb/train/neg/0_" + found["train"].where[0].rsplit("_", 1)[1])


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


@pytest.mark.parametrize("member", [
    file_member("/etc/cron.d/evil"), file_member("aclImdb/../../evil.txt"), file_member("../evil.txt"),
    link_member("aclImdb/train/pos/1_9.txt", "/etc/passwd"), link_member("aclImdb/link", "../../../etc/passwd"),
    link_member("aclImdb/hard", "../../etc/passwd", tarfile.LNKTYPE)])
def test_unsafe_members_are_refused_with_a_clear_error(tmp_path, member):
    crafted_archive(tmp_path / "aclImdb_v1.tar.gz", member)
    with pytest.raises(TextsError) as caught:
        read_texts(tmp_path, IMDB_READ)
    message = str(caught.value)
    assert "aclImdb_v1.tar.gz" in message and repr(member.name) in message and "refusing" in message


@pytest.fixture
def prepared(tmp_path, imdb_raw):
    return tmp_path / "prepared", prepare(imdb_raw, SETTINGS, tmp_path / "prepared")


def test_outputs_are_compact_arrays_plus_a_tokenizer_and_metadata(prepared):
    out, _ = prepared
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.npz", "tokenizer.json", "train.npz", "val.npz"]
    train = np.load(out / "train.npz")
    assert train["ids"].dtype == np.uint16 and train["ids"].shape == (18, 16) and train["labels"].dtype == np.int8
    meta = json.loads((out / "meta.json").read_text())
    assert meta | {"tokenizer_sha256": None} == {
        "tokenizer": "tokenizer.json", "tokenizer_sha256": None, "vocab_size": 20, "pad_id": 0,
        "unk_id": 1, "max_len": 16, "truncation_side": "right", "labels": ["neg", "pos"]}


def test_saved_tokenizer_reproduces_the_arrays_without_torch(prepared, imdb_raw):
    out, _ = prepared
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    encodings = tokenizer.encode_batch(read_texts(imdb_raw, IMDB_READ)["test"].texts)
    ids = np.array([np.pad(e.ids, (0, 16 - len(e.ids))) for e in encodings])
    assert np.array_equal(ids, np.load(out / "test.npz")["ids"])


def test_vocabulary_comes_from_the_training_split_only(tmp_path, imdb_raw):
    found = read_texts(imdb_raw, IMDB_READ)
    for from_unlabelled in (False, True):
        out = tmp_path / f"unlabelled-{from_unlabelled}"
        prepare(imdb_raw, SETTINGS.model_copy(update={"vocab_from_unlabelled": from_unlabelled,
                                                      "vocab_size": 1000, "min_freq": 1}), out)
        vocab = set(Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab())
        rows = np.load(out / "train.npz")["rows"]
        allowed = {w for text in [found["train"].texts[i] for i in rows] + (found["unlabelled"].texts
                                                                           if from_unlabelled else [])
                   for w in words(new_tokenizer(WORDS), text)}
        assert vocab - {"[PAD]", "[UNK]"} == allowed
        assert "testonlyword" not in vocab and ("unsuponlyword" in vocab) is from_unlabelled


def test_splits_are_disjoint_and_the_card_counts_them(prepared, imdb_raw):
    out, card = prepared
    train, val = (set(np.load(out / f"{s}.npz")["rows"].tolist()) for s in ("train", "val"))
    assert train.isdisjoint(val) and train | val == set(range(24))
    assert [card["splits"][n]["count"] for n in ("train", "val", "test")] == [18, 6, 24]
    assert card["splits"]["val"]["pos"] == card["splits"]["val"]["neg"] == 3
    assert card["source"] == {"aclImdb_v1.tar.gz": hashlib.sha256((imdb_raw / "aclImdb_v1.tar.gz").read_bytes())
                              .hexdigest()}
    test = card["splits"]["test"]
    assert set(test) == {"count", "neg", "pos", "tokens", "truncated_fraction", "oov_rate", "empty"}
    assert card["unlabelled_count"] == 10 and 0 < test["oov_rate"] < 1
    assert card["splits"]["train"]["oov_rate"] < test["oov_rate"]  # the marker words are unknown


def zero_the_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(16) + data[middle + 16:]


@pytest.mark.parametrize("damage", [
    lambda data: data[:len(data) * 6 // 10], lambda data: data[:len(data) // 100], lambda data: data[:-4],
    zero_the_middle], ids=["cut-at-60%", "cut-at-1%", "cut-trailer", "zeroed-bytes"])
def test_a_truncated_or_corrupt_archive_is_named_and_leaves_no_output(tmp_path, damage):
    raw = tmp_path / "raw"
    raw.mkdir()
    archive = make_imdb_archive(raw / "aclImdb_v1.tar.gz")
    archive.write_bytes(damage(archive.read_bytes()))
    with pytest.raises(DamagedSourceError) as caught:
        prepare(raw, SETTINGS, tmp_path / "prepared")
    assert str(archive) in str(caught.value) and ("truncated or corrupt" in str(caught.value)
                                                  or "cannot open" in str(caught.value))
    assert sorted(tmp_path.iterdir()) == [raw]


def test_non_utf8_reviews_are_refused_naming_the_member(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with tarfile.open(raw / "aclImdb_v1.tar.gz", "w:gz") as tar:
        for name, text in imdb_reviews().items():
            add_member(tar, name, text)
        info = tarfile.TarInfo("aclImdb/test/pos/100_9.txt")
        info.size = 14
        tar.addfile(info, io.BytesIO(b"Caf\xe9 was great"))
    message = refused(tmp_path, SETTINGS, raw)
    assert "aclImdb/test/pos/100_9.txt" in message and "UTF-8" in message


# ---- tokenizer, encoding, split -------------------------------------------------------------------


def test_the_word_tokenizer_strips_line_breaks_lowercases_and_splits_punctuation():
    tokens = words(new_tokenizer(WORDS), "Great<br />movie!! I didn't LIKE it<br/>, 10/10")
    assert tokens == ["great", "movie", "!", "!", "i", "didn't", "like", "it", ",", "10", "/", "10"]


def test_the_character_tokenizer_makes_every_character_a_token():
    assert words(new_tokenizer(TextTokenizer(level="char", lowercase=False)), "東京 ok") == ["東", "京", " ", "o", "k"]


def test_vocabulary_respects_size_min_frequency_special_ids_and_not_input_order():
    texts = ["a a a a b b b c c d", "e"]
    vocab = build_tokenizer(texts, WORDS, vocab_size=5, min_freq=2).get_vocab()
    assert vocab["[PAD]"] == PAD_ID and vocab["[UNK]"] == UNK_ID
    assert set(vocab) == {"[PAD]", "[UNK]", "a", "b", "c"} and vocab["a"] < vocab["b"] < vocab["c"]
    many = [" ".join(f"w{i % k}" for i in range(30)) for k in range(2, 12)]
    assert build_tokenizer(many[::-1], WORDS, 8, 1).get_vocab() == build_tokenizer(many, WORDS, 8, 1).get_vocab()


@pytest.mark.parametrize("side, expected", [("right", [2, 3, 4]), ("left", [4, 5, 6])])
def test_encoding_truncates_on_the_chosen_side_pads_and_maps_unknowns(side, expected):
    tokenizer = build_tokenizer(["a b c d e"] * 2, WORDS, vocab_size=10, min_freq=1)
    encoded = encode(tokenizer, ["a b c d e", "b zzz"], max_len=3, truncation_side=side)
    assert encoded.ids[0].tolist() == expected and encoded.ids[1].tolist() == [3, UNK_ID, PAD_ID]
    assert encoded.lengths.tolist() == [3, 2] and encoded.full_lengths.tolist() == [5, 2]
    assert (encoded.unk_count, encoded.token_count) == (1, 7)


def test_auto_max_len_is_trains_95th_percentile_in_multiples_of_8():
    assert auto_max_len(np.arange(1, 101)) == 96 and auto_max_len(np.array([3, 4, 5])) == 8


def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.array([0] * 60 + [1] * 40, dtype=np.int8)
    train, val = split_train_val(labels, 0.2, 3, ["a", "b"], "train.csv")
    assert len(val) == 20 and set(train).isdisjoint(val) and (labels[val] == 1).sum() == 8
    assert np.array_equal(train, split_train_val(labels, 0.2, 3, ["a", "b"], "x")[0])
    assert not np.array_equal(train, split_train_val(labels, 0.2, 4, ["a", "b"], "x")[0])
