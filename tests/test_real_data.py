"""The real data stages on ../shared/data (slow: about a minute). Run with `pytest -m slow`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_DATA, copy_repo, run_in

pytestmark = pytest.mark.slow

FILES = ("aclImdb_v1.tar.gz", "ETTh1.csv")


@pytest.mark.skipif(not all((SHARED_DATA / f).is_file() for f in FILES),
                    reason=f"the local dataset copies are not in {SHARED_DATA}")
def test_real_data_stages_give_the_published_counts(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    run_in(repo, "dvc", "repro", "prepare@imdb", "prepare@etth1",
           env={"RB_OFFLINE_DIR": str(SHARED_DATA)})

    imdb = json.loads((repo / "metrics/data/imdb.json").read_text())
    counts = {s: (c["count"], c["neg"], c["pos"]) for s, c in imdb["splits"].items()}
    assert counts == {"train": (22500, 11250, 11250), "val": (2500, 1250, 1250),
                      "test": (25000, 12500, 12500)}
    assert imdb["unlabelled_count"] == 50000 and imdb["vocab_size"] == 30000
    assert imdb["source"] == {"aclImdb_v1.tar.gz": "7d86c2b7254b3b41cd4561f8af8f6b6a336e5942bb46ef91f47ba327aa0fa4e3"}

    etth1 = json.loads((repo / "metrics/data/etth1.json").read_text())
    assert etth1["rows"] == 17420
    assert etth1["windows"] == {"train": 8449, "val": 2785, "test": 2785}
    assert etth1["columns"] == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
