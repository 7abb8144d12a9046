"""The browser's tokenizer (web/tokenizer.mjs, run by Node) gives the token ids that Python's
gives (`tokenizers`, as prepare fits it and predict loads it), on an adversarial corpus and on
random Unicode text, at both levels and both truncation sides."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest

from pipeline.data.texts import build_tokenizer, configure_for_inference
from pipeline.data.texts_settings import TextTokenizer
from tests.conftest import REPO_ROOT

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (`node`), which is not on PATH here")

ADVERSARIAL = [
    "This movie was great!<br /><br />I didn't like the ending, though.",
    "<BR/>shouting<br>breaks<br  />and <br/ > a broken one",
    "rock'n'roll isn't 'quoted' -- it's fine...",
    "next\u0085line, no\u00a0break, ideographic\u3000space, zero\u200bwidth, bom\ufeffinside",
    "ligatures: ﬁne ﬂow ﬀ; full width: ＡＢＣ１２３！",
    "ΟΔΟΣ ΣΟΦΟΣ — final sigma; İstanbul; ǅ titlecase; ß Straße",
    "emoji 😀👍🏽 and flags 🇫🇷, zwj 👩‍👩‍👧",
    "CJK 你好世界 こんにちは 안녕하세요",
    "a literal [UNK] and [PAD] in the text",
    "numbers ² ½ ① ٣ 𝟙 and Ⅻ, connectors a_b a‿b",
    "combining e\u0301 vs \u00e9, Hangul jamo \u1100\u1161",
    "",
    "   \t\n  ",
    "tabs\tand\nnewlines\r\nand \u2028 separators \u2029",
    "word " * 500,
]


def random_texts(count: int, seed: int) -> list[str]:
    """Random code points from every plane's assigned-looking ranges, with ASCII words and spaces."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xA0, 0x2FF), (0x370, 0x52F), (0x2000, 0x206F), (0x3000, 0x30FF),
              (0x4E00, 0x4E80), (0x0F20, 0x0F33), (0x1360, 0x137C), (0x2150, 0x218B), (0x10100, 0x1013F), (0xFB00, 0xFB4F), (0xFE00, 0xFFEF), (0x1D400, 0x1D7FF), (0x1F300, 0x1F6FF)]
    texts = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(1, 60)):
            low, high = rng.choice(ranges)
            chars.append(chr(rng.randint(low, high)) if rng.random() < 0.5 else rng.choice([" ", "a", "The", "'s", "<br />"]))
        texts.append("".join(chars))
    return texts


def node_ids(tokenizer_json: str, texts: list[str]) -> list[list[int]]:
    script = (f"import {{loadTokenizer}} from {json.dumps(str(REPO_ROOT / 'web/tokenizer.mjs'))};"
              "let input = ''; process.stdin.on('data', (d) => input += d); process.stdin.on('end', () => {"
              " const {spec, texts} = JSON.parse(input); const t = loadTokenizer(spec);"
              " process.stdout.write(JSON.stringify(texts.map((x) => t.encode(x)))); });")
    result = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True,
                            input=json.dumps({"spec": json.loads(tokenizer_json), "texts": texts}), timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("settings, side", [
    ({}, "right"), ({}, "left"), ({"level": "char"}, "right"), ({"lowercase": False, "breaks": None}, "right")])
def test_the_browser_tokenizer_gives_pythons_ids(settings, side):
    corpus = ADVERSARIAL + random_texts(300, seed=0)
    tokenizer = build_tokenizer(corpus[:200], TextTokenizer(**settings), vocab_size=2000, min_freq=1)
    configure_for_inference(tokenizer, max_len=64, truncation_side=side)
    expected = [tokenizer.encode(text).ids for text in corpus]
    found = node_ids(tokenizer.to_str(), corpus)
    mismatched = [(text, e, f) for text, e, f in zip(corpus, expected, found) if e != f]
    assert not mismatched, f"{len(mismatched)} of {len(corpus)} differ; the first: {mismatched[0]}"
    assert any(1 in ids for ids in expected) and max(len(ids) for ids in expected) == 64   # [UNK]s, truncation
