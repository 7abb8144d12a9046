"""The browser's seeded sampling (web/sampling.mjs, run by Node) draws what pipeline.deploy.predict
draws: numpy's default_rng(seed) bit for bit, and the generator's `pick` (temperature, top-k,
greedy) id for id on the same logits."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.kinds.generator_spec import pick
from tests.conftest import REPO_ROOT

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (`node`), which is not on PATH here")


def node(script: str, payload) -> object:
    module = json.dumps(str(REPO_ROOT / "web/sampling.mjs"))
    code = (f"import * as s from {module}; let input = ''; process.stdin.on('data', (d) => input += d);"
            f"process.stdin.on('end', () => {{ const p = JSON.parse(input); process.stdout.write(JSON.stringify(({script})(s, p))); }});")
    result = subprocess.run([NODE, "--input-type=module", "-e", code], input=json.dumps(payload),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("seed", [0, 1, 1337, 2**32 + 5, 2**70 + 3])
def test_the_uniform_draws_are_numpys_default_rng(seed):
    expected = np.random.default_rng(seed).random(50).tolist()
    found = node("(s, p) => { const r = new s.NumpyRandom(BigInt(p.seed)); return Array.from({length: 50}, () => r.random()); }",
                 {"seed": str(seed)})
    assert found == expected


@pytest.mark.parametrize("temperature, top_k", [(0.8, None), (1.0, 5), (0.3, None), (0.0, None), (2.0, 1)])
def test_the_sampled_ids_are_picks_on_the_same_logits(temperature, top_k):
    logits = np.random.default_rng(3).normal(0, 3, (400, 65)).astype(np.float32)
    rng = np.random.default_rng(7)
    expected = [pick(row, temperature, rng, top_k) for row in logits]
    found = node("(s, p) => { const r = new s.NumpyRandom(7); return p.logits.map((l) => s.pick(l, p.t, r, p.k)); }",
                 {"logits": logits.astype(np.float64).tolist(), "t": temperature, "k": top_k})
    assert found == expected
    assert len(set(expected)) > (1 if top_k == 1 or temperature == 0 else 20)   # a real spread of draws
