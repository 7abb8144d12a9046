"""The IMDB recipe study (benchmarks/imdb_recipe.py): every candidate is a configuration that
composes and validates through conf/, and sets what its name says."""

from __future__ import annotations

import json

import pytest

from benchmarks.imdb_recipe import BEFORE, CANDIDATES, table
from pipeline.compose import compose
from pipeline.config import validate
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_each_candidate_composes_through_conf_and_sets_what_it_names(name):
    model, overrides = CANDIDATES[name]
    config = validate(compose(["tracking.enabled=false", *overrides], REPO_ROOT / "conf"))
    imdb = config.task["imdb"]
    assert model in imdb.models
    assert imdb.prepare.max_len == (400 if set(BEFORE) <= set(overrides) else 600)
    assert (imdb.train.epochs == 4) is ("4 epochs" in name)
    assert (imdb.train.batch_size == 128 and (imdb.train.lr or config.train.lr) == 0.003) is ("batch 128" in name)
    assert (imdb.prepare.truncation_side == "left") is ("keep the end" in name)
    lstm = config.model["lstm"].classifier
    assert (lstm.dropout == lstm.embedding_dropout == 0.5) is ("dropout 0.5" in name)
    assert (config.train.weight_decay == 0.1) is ("weight decay 0.1" in name)
    assert (imdb.prepare.vocab_size == 60000) is ("vocabulary 60k" in name)
    assert (imdb.embeddings.dim == lstm.embedding_dim == 256) is ("embedding 256" in name)


def test_the_committed_results_are_the_documented_table():
    results = REPO_ROOT / "benchmarks/results/imdb-recipe/results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert {r["candidate"] for r in rows} <= set(CANDIDATES)   # every run is a named candidate
    assert table(results) in (REPO_ROOT / "docs/benchmarks.md").read_text()
