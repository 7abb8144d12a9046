"""The classifier, torch-free: how a deployed model reads a request and answers it
(pipeline.deploy.predict, the served model). Its name, metric and settings are
`classifier_settings.py`; the rest of the kind, which needs torch, is `classifier.py`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.deploy.limits import PredictError, within
from pipeline.kinds.classifier_settings import MAXIMIZE, METRIC, NAME, Settings  # noqa: F401  (the kind's names)

STRING_FIELD = "text"             # what a bare string of a request fills: {"inputs": ["...", "..."]}
ROW_LIMIT = ("max_texts", "reviews in one request")   # the limit on a request's rows, checked first


def example(meta: dict) -> str:
    """A request this model answers, for the messages that refuse one."""
    return '{"inputs": ["A wonderful film.", "Dull."]} or {"dataframe_records": [{"text": "A wonderful film."}]}'


# ---- reading a request ---------------------------------------------------------------------------


def check_texts(texts: list[str], limits: dict | None) -> None:
    within(limits, "max_texts", len(texts), "reviews in one request")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]), default=None)
    if longest is not None:
        within(limits, "max_text_chars", len(texts[longest]), f"characters in text #{longest}")


def read_texts(texts: list[str] | None, file: str | None, limits: dict | None = None) -> list[str]:
    collected = list(texts or [])
    if file:
        try:
            content = Path(file).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PredictError(f"{file}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except OSError as exc:
            raise PredictError(f"{file}: cannot read ({exc.strerror})") from None
        collected += [line for line in content.splitlines() if line.strip()]
    if not collected:
        raise PredictError("no text given: pass --text TEXT (repeatable) or --file FILE (one review per line)")
    check_texts(collected, limits)
    empty = [i for i, text in enumerate(collected) if not text.strip()]
    if empty:
        raise PredictError(f"text #{empty[0]} is empty; every review needs at least one word")
    return collected


def from_cli(args, meta: dict, limits: dict | None) -> list[str]:
    """pipeline.deploy.predict's --text (repeatable) and --file."""
    return read_texts(args.text, args.file, limits)


def from_records(records: list[dict], meta: dict | None = None, limits: dict | None = None) -> list[str]:
    """A served request's rows: a field `text`, one review per row."""
    if not records or STRING_FIELD not in records[0]:
        found = sorted(records[0]) if records else []
        raise PredictError(f"the classifier takes a field 'text', one review per row; found fields {found}; "
                           f"e.g. {example(meta)}")
    texts = [row[STRING_FIELD] for row in records]
    wrong = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if wrong:
        raise PredictError(f"text #{wrong[0]} is {texts[wrong[0]]!r}, not a string")
    return read_texts(texts, None, limits)  # refuses an empty review, and one over the limits


def rows(texts: list[str]) -> int:
    return len(texts)


# ---- answering it -------------------------------------------------------------------------------


def context(meta: dict, tokenizer: str | None = None):
    """What answering needs besides the session: the tokenizer (the model's own, or `tokenizer`)."""
    from tokenizers import Tokenizer

    text = Path(tokenizer).read_text(encoding="utf-8") if tokenizer else meta.get("tokenizer_json")
    if text is None:
        raise PredictError("the model carries no tokenizer; pass --tokenizer data/prepared/<task>/data/tokenizer.json")
    found = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if found != meta.get("tokenizer_sha256"):
        raise PredictError(f"tokenizer sha256 {found} differs from the model's {meta.get('tokenizer_sha256')}: "
                           "it is not the tokenizer this model was trained with")
    return Tokenizer.from_str(text)


def encode(tokenizer, texts: list[str]) -> np.ndarray:
    """Token ids [N, T], right-padded and truncated exactly as in training."""
    return np.array([e.ids for e in tokenizer.encode_batch(texts)], dtype=np.int64)


def answer(session, meta: dict, texts: list[str], tokenizer) -> list[dict]:
    labels = json.loads(meta["labels"])
    probabilities = session.run(["probabilities"], {"input_ids": encode(tokenizer, texts)})[0]
    return [{"text": text[:80], "label": labels[int(p.argmax())],
             "probabilities": {label: float(v) for label, v in zip(labels, p)}}
            for text, p in zip(texts, probabilities)]


# ---- the serving benchmark's requests (benchmarks/serving_load.py) ------------------------------


def request_material(task) -> None:
    """What the requests below are built from (none: they are made up)."""
    return None


def longest_request(limits: dict) -> None:
    """The longest request this kind's served model is timed on (none for the classifier)."""
    return None


def ordinary_request(window: dict | None) -> dict:
    return {"inputs": ["A wonderful, moving film.", "Dull and far too long.",
                       "The plot was thin but the acting carried it.", "I would not watch it again."]}


def refused_requests(limits: dict, window: dict | None) -> dict[str, tuple[dict, int, str]]:
    """{name: (body, status, text the answer holds)}: one over each limit, and a wrong field."""
    return {"max_texts": ({"inputs": ["ok"] * (limits["max_texts"] + 1)}, 400, "serve.limits.max_texts"),
            "max_text_chars": ({"inputs": ["a" * (limits["max_text_chars"] + 1)]}, 400,
                               "serve.limits.max_text_chars"),
            "wrong field": ({"dataframe_records": [{"review": "fine"}]}, 400, "takes a field 'text'")}
