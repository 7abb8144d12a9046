"""The `texts` data kind's settings (labelled texts, for text classification): the schema of
`task.<name>` for a task of `data: texts`. pipeline.config builds the configuration's schema
from every data kind's `*_settings.py`; the code that reads and prepares the texts (`texts/`) is
imported only for this kind's tasks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.kinds import classifier_settings
from pipeline.schema import PositiveInt, Section, TaskBase, TaskTrain

NAME = "texts"
FORMATS = ("csv", "tsv", "jsonl", "parquet", "folders", "lines")


class TextFiles(Section):
    """Where each split is, relative to the task's raw folder (data/raw/<task>/, named as the
    source URLs end). An archive (.tar, .tar.gz, .zip) is entered like a folder:
    `aclImdb_v1.tar.gz/aclImdb/train`."""

    train: str = Field(min_length=1)
    test: str = Field(min_length=1)
    val: str | None = None          # none: carved from train (prepare.val_fraction, stratified, seeded)
    unlabelled: str | None = None   # texts without labels: the vocabulary and the embeddings only


class TextRead(Section):
    """How the files hold texts and labels."""

    # csv, tsv, jsonl, parquet: one text per row, in columns (fields) `text` and `label`.
    # folders: a folder per class (the aclImdb layout), one text per file; the folder's name is the label.
    # lines: one `<label> <text>` per line (the label ends at the first run of whitespace).
    format: Literal[FORMATS]
    files: TextFiles
    text: str | int = "text"        # the text's column (a name, or a 0-based position when header is false)
    label: str | int = "label"      # the label's column
    separator: str | None = None    # csv: ",", tsv: a tab
    header: bool = True             # csv, tsv: the first row names the columns
    # The label names in class-id order. Left out: train's labels, sorted (numbers by value).
    # With folders, only these folders are read (aclImdb's train/unsup is not a class).
    labels: list[str | int] | None = Field(None, min_length=2)
    pattern: str = "*.txt"          # folders: which files in a class folder are texts

    @field_validator("labels")
    @classmethod
    def _labels_differ(cls, labels):
        if labels is not None and len({str(label) for label in labels}) != len(labels):
            raise ValueError(f"labels must differ, found {labels}")
        return labels


class TextTokenizer(Section):
    """The tokenizer fitted on train (Hugging Face `tokenizers`, saved into the model)."""

    level: Literal["word", "char"] = "word"   # char: every character is a token (languages without spaces)
    lowercase: bool = True
    breaks: str | None = r"<br\s*/?>"          # a pattern replaced by a space first (HTML line breaks); null: none


class TextsPrepare(Section):
    read: TextRead
    tokenizer: TextTokenizer = TextTokenizer()
    vocab_size: int = Field(30000, ge=3, description="including [PAD] and [UNK]")
    # 2: a word seen once in train is [UNK], so [UNK] is learnt from train as it is met in test.
    min_freq: PositiveInt = 2
    vocab_from_unlabelled: bool = False   # also count the unlabelled texts when building the vocabulary
    # Tokens kept per text; `auto`: train's 95th percentile of lengths, rounded up to a multiple of 8.
    max_len: PositiveInt | Literal["auto"] = "auto"
    truncation_side: Literal["left", "right"] = "right"   # right: drop the end (keep the opening)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _unlabelled_when_counted(self) -> "TextsPrepare":
        if self.vocab_from_unlabelled and self.read.files.unlabelled is None:
            raise ValueError("vocab_from_unlabelled is true but read.files.unlabelled names no file")
        return self


class EmbeddingsConfig(Section):
    """word2vec on the training split and the unlabelled texts (stage embed@<task>)."""

    dim: PositiveInt
    window: PositiveInt
    epochs: PositiveInt
    skip_gram: bool
    seed: int = Field(ge=0)


class TextsTrain(TaskTrain):
    """Defaults chosen on short-text proxies (docs/own-data.md, "How the defaults were chosen"):
    a few thousand sentences need the optimiser steps of ten epochs at batch 32 (five epochs, or
    batch 64, scored lower on validation); early stopping (train.patience) and the best epoch on
    validation keep a larger corpus from paying for all ten."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 256


class Task(TaskBase):
    data: Literal[NAME]
    prepare: TextsPrepare
    embeddings: EmbeddingsConfig | None = None   # none: no embed stage for this task
    train: TextsTrain = TextsTrain()
    head: str = classifier_settings.NAME
