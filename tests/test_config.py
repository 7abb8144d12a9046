"""The composed config: params.yaml in step with conf/, and a schema that fails loudly."""

from __future__ import annotations

import sys

import pytest
import yaml

from pipeline.config import ConfigError, load_config, main, validate
from pipeline.compose import compose, to_yaml
from tests.conftest import REPO_ROOT, run_in


def test_params_yaml_matches_a_fresh_composition_of_conf():
    committed = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    assert committed == to_yaml(compose()), (
        "params.yaml differs from conf/; regenerate it with `python -m pipeline.config`")


def test_our_composition_equals_dvc_hydra_composition(tmp_path):
    # `dvc exp run -S ...` writes params.yaml through this DVC function; both must agree.
    from dvc.utils.hydra import compose_and_dump

    out = tmp_path / "params.yaml"
    overrides = ["train.lr=0.01", "task.etth1.prepare.horizon=192"]
    compose_and_dump(out, str(REPO_ROOT / "conf"), None, "config", str(tmp_path), overrides)
    assert out.read_text(encoding="utf-8") == to_yaml(compose(overrides))


def test_check_flag_detects_a_stale_params_file(tmp_path, capsys):
    target = tmp_path / "params.yaml"
    assert main(["-o", str(target)]) == 0
    assert main(["-o", str(target), "--check"]) == 0
    target.write_text(target.read_text().replace("lr: 0.002", "lr: 0.005"))
    assert main(["-o", str(target), "--check"]) == 1
    assert "differs from conf/" in capsys.readouterr().err


def test_overrides_reach_the_composed_config():
    config = validate(compose(["model.gru.classifier.hidden_size=256", "task.etth1.prepare.features=S"]))
    assert config.model["gru"].classifier.hidden_size == 256
    assert config.model["lstm"].classifier.hidden_size == 128
    assert config.task["etth1"].prepare.features == "S"


def test_a_task_trains_every_model_unless_it_names_its_own():
    runs = validate(compose()).runs
    assert {r.model for r in runs.values() if r.task == "etth1"} == {"lstm", "gru", "peephole"}
    for slow in ("imdb", "shakespeare"):   # the peephole LSTM is opt-in there (the 60-minute budget)
        assert {r.model for r in runs.values() if r.task == slow} == {"lstm", "gru"}
    opted_in = validate(compose(["task.shakespeare.models=[lstm,gru,peephole]",
                                 "task.imdb.models=[lstm,gru,peephole]"])).runs
    assert opted_in["shakespeare-peephole"].head == "generator"
    assert opted_in["imdb-peephole"].head == "classifier"


@pytest.mark.parametrize("override, key, allowed", [
    ("train.lr=-0.001", "train.lr", "greater than 0"),
    ("task.etth1.prepare.horizon=0", "task.etth1.prepare.horizon", "greater than 0"),
    ("+train.learning_rate=0.1", "train.learning_rate", "unknown key"),
    ("model.gru.classifier.bidirectional=yes", "model.gru.classifier.bidirectional", "valid boolean"),
    ("model.lstm.forecaster.hidden_size=big", "model.lstm.forecaster.hidden_size", "valid integer"),
    ("task.imdb.prepare.truncation_side=middle", "task.imdb.prepare.truncation_side", "'left' or 'right'"),
    ("task.imdb.prepare.val_fraction=1.5", "task.imdb.prepare.val_fraction", "less than 1"),
    ("task.imdb.source.checksum=md5:xyz", "task.imdb.source.checksum", "should match pattern"),
    ("export.opset=13", "export.opset", "greater than or equal to 17"),
    ("task.etth1.prepare.ratios=[0.7,0.1,0.2]", "task.etth1.prepare", "exactly one of borders"),
    ("model.lstm.cell=peephole", "model.lstm.cell", "'lstm', 'gru' or 'lstm_peephole'"),
    ("task.shakespeare.models=[lstm,peepole]", "task.shakespeare.models", "['peepole'] are not models"),
    ("+task.shakespeare.precision=bf16", "task.shakespeare.precision", "unknown key"),   # it is under train
])
def test_bad_values_fail_naming_the_key_and_what_is_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as caught:
        validate(compose([override]))
    message = str(caught.value)
    assert f"{key}:" in message and allowed in message, message
    assert len(message) < 1000, message   # what was found in the key, never the whole configuration (9 kB)


def test_a_misspelt_override_key_is_one_line_naming_the_key_and_the_nearest_valid_ones(tmp_path, capsys):
    output = tmp_path / "params.yaml"
    assert main(["train.lr=0.01", "model.gru.classifier.hiden_size=3", "-o", str(output)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.out + captured.err, captured.err
    assert "model.gru.classifier.hiden_size=3" in lines[0]
    assert "no such key 'hiden_size' under model.gru.classifier" in lines[0]
    assert "did you mean hidden_size?" in lines[0]
    assert "valid keys: bidirectional, dropout, embedding_dim" in lines[0]
    assert not output.exists()


def test_a_misspelt_section_reports_the_deepest_valid_prefix_and_its_keys(tmp_path, capsys):
    assert main(["model.gru.clasifier.hidden_size=3", "-o", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no such key 'clasifier' under model.gru; did you mean classifier?" in err
    assert "(valid keys: cell, classifier, forecaster, generator)" in err


@pytest.mark.parametrize("override, says", [
    pytest.param("export=gppu", "Could not find 'export/gppu'", id="a-bad-group-option"),
    pytest.param("train.lr=[", "no viable alternative at input", id="malformed-override-syntax"),
])
def test_other_rejected_overrides_are_one_line_in_hydras_words(override, says, tmp_path, capsys):
    assert main([override, "-o", str(tmp_path / "params.yaml")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.out + captured.err, captured.err
    assert lines[0].startswith(f"conf/: override {override}: ") and says in lines[0]
    assert not (tmp_path / "params.yaml").exists()


def test_a_missing_key_is_named(tmp_path):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    del params["train"]["patience"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"train\.patience: required key is missing"):
        load_config(path)


def test_a_stage_fails_at_start_up_on_a_bad_params_file(tmp_path):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["task"]["etth1"]["prepare"]["lookback"] = -4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_in(tmp_path, sys.executable, "-m", "pipeline.stages.fetch", "etth1", check=False)
    assert result.returncode == 1
    assert "task.etth1.prepare.lookback: Input should be greater than 0 (found -4)" in result.stderr
    assert not (tmp_path / "data").exists()


def test_missing_params_file_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match="python -m pipeline.config"):
        load_config(tmp_path / "params.yaml")
