"""Recipe parsing: overrides, type coercion, "did you mean", cross-field checks and path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapt.core.errors import RecipeError
from adapt.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent

# The three splits every recipe needs; tests about other keys start from these.
REQUIRED = ["data.source.train=s.jsonl", "data.source.test=st.jsonl", "data.target.test=tt.jsonl"]


def load(overrides: list[str], path: Path | None = None, cwd: Path | None = None):
    return load_recipe(path, REQUIRED + overrides, cwd=cwd)


def problems(overrides: list[str], path: Path | None = None) -> list[str]:
    """The problems a recipe is rejected with (the test fails if it is accepted)."""
    with pytest.raises(RecipeError) as err:
        load(overrides, path)
    return err.value.problems


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------------------------------------------------
# Overrides and coercion.


def test_override_values_are_coerced_to_the_field_type():
    r = load(["train.lr=5e-5", "train.epochs=7", "train.group_by_length=false", "model.finetune=lora",
              "model.lora.target_modules=[query,key]", "data.label_names=[neg,pos]"])
    assert r.train.lr == 5e-05 and type(r.train.lr) is float
    assert r.train.epochs == 7 and type(r.train.epochs) is int
    assert r.train.group_by_length is False
    assert r.model.lora.target_modules == ["query", "key"]
    assert r.data.label_names == ["neg", "pos"]


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # PyYAML reads `5e-5` (no dot) as a string.
    path = write(tmp_path / "r.yaml", "train:\n  lr: 5e-5\n  warmup_ratio: 0\n")
    r = load([], path)
    assert r.train.lr == 5e-05 and type(r.train.lr) is float
    assert r.train.warmup_ratio == 0.0 and type(r.train.warmup_ratio) is float


def test_string_field_keeps_yaml_keywords_from_the_command_line():
    # YAML would read `no` as False and `null`-like words as None; a string field keeps the text.
    r = load(["data.source.domain=no", "data.target.domain=on"])
    assert r.data.source.domain == "no"
    assert r.data.target.domain == "on"


def test_yaml_boolean_in_a_string_field_says_to_quote_it(tmp_path):
    path = write(tmp_path / "r.yaml", "data:\n  source:\n    domain: no\n")
    message = only(problems([], path))
    assert "`data.source.domain`" in message and "quote" in message


def test_a_choice_that_yaml_reads_as_a_boolean_is_the_choice_on_the_command_line():
    # `train.mixed_precision=no` (fp32) was refused as "got False": YAML reads `no` as a boolean.
    assert load(["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert load(["train.mixed_precision=bf16"]).train.mixed_precision == "bf16"


def test_a_yaml_boolean_where_a_choice_belongs_says_to_quote_it(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n  mixed_precision: no\n")
    message = only(problems([], path))
    assert "`train.mixed_precision` must be one of auto, no, bf16, fp16; got False" in message and "quote" in message
    assert load([], write(tmp_path / "q.yaml", "train:\n  mixed_precision: 'no'\n")).train.mixed_precision == "no"


def test_tilde_removes_a_key_so_the_default_applies(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n  lr: 1.0e-3\n  epochs: 9\n")
    assert load([], path).train.lr == 1e-3
    r = load(["~train.lr"], path)
    assert r.train.lr == 5e-05  # the schema default
    assert r.train.epochs == 9  # the rest of the section is untouched


def test_override_wins_over_the_file(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n  epochs: 9\n")
    assert load(["train.epochs=2"], path).train.epochs == 2


# ----------------------------------------------------------------------------------------------------------
# Unknown keys and type errors, all reported together.


def test_unknown_override_key_suggests_the_close_one():
    assert "did you mean `lr`" in only(problems(["train.lrr=1"]))
    message = only(problems(["trian.lr=1"]))
    assert "`trian.lr`" in message and "did you mean `train`" in message


def test_unknown_yaml_key_suggests_the_close_one(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n  epochss: 3\n")
    message = only(problems([], path))
    assert "`train.epochss`" in message and "did you mean `epochs`" in message


def test_type_error_names_the_key_and_the_value():
    message = only(problems(["train.lr=abc"]))
    assert "`train.lr`" in message and "abc" in message


def test_override_without_equals_is_an_error():
    assert "`nonsense`" in only(problems(["nonsense"]))


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n  epochss: 3\n")
    found = problems(["train.lrr=1", "trian.lr=1", "train.batch_size=big", "nonsense"], path)
    assert len(found) == 5, found
    for needle in ("train.epochss", "train.lrr", "trian.lr", "train.batch_size", "nonsense"):
        assert any(needle in p for p in found), (needle, found)


def test_cross_field_problems_are_reported_together():
    found = problems(["train.epochs=-1", "model.lora.r=16", "method.name=nope", "train.lr=0"])
    assert len(found) == 4, found


# ----------------------------------------------------------------------------------------------------------
# Cross-field checks.


def test_lora_settings_without_lora_finetune_is_an_error():
    message = only(problems(["model.lora.r=16"]))
    assert "`model.lora`" in message and "model.finetune=lora" in message


def test_lora_rank_must_be_positive():
    assert only(problems(["model.finetune=lora", "model.lora.r=0"])) == "`model.lora.r` must be > 0, got 0"


def test_negative_epochs_is_an_error():
    assert "`train.epochs` must be >= 1, got -1" in only(problems(["train.epochs=-1"]))


def test_unknown_method_is_an_error_listing_the_registry():
    message = only(problems(["method.name=nope"]))
    assert "`method.name=nope`" in message and "source_only" in message


def test_lora_finetune_alone_gets_default_lora_settings():
    lora = load(["model.finetune=lora"]).model.lora
    # target_modules null: the model family's default, known once the model is loaded (`adapt.model.families`)
    assert (lora.r, lora.alpha, lora.target_modules) == (8, 16.0, None)
    assert load([]).model.lora is None


def test_freeze_layers_needs_freeze_finetune():
    message = only(problems(["model.freeze_layers=1"]))
    assert "`model.freeze_layers`" in message and "model.finetune=freeze" in message
    assert load(["model.finetune=freeze", "model.freeze_layers=1"]).model.freeze_layers == 1


def test_target_dev_selection_needs_labelled_target_data():
    message = only(problems(["eval.select_on=target_dev"]))
    assert "`eval.select_on" in message and "data.target.dev" in message
    assert load(["eval.select_on=target_dev", "data.target.dev=td.jsonl"]).eval.select_on == "target_dev"


def test_missing_required_splits_are_named():
    with pytest.raises(RecipeError) as err:
        load_recipe(None, [])
    found = " ".join(err.value.problems)
    for key in ("data.source.train", "data.source.test", "data.target.test"):
        assert f"`{key}`" in found


# ----------------------------------------------------------------------------------------------------------
# Paths.


def test_paths_in_a_file_are_relative_to_the_file(tmp_path, monkeypatch):
    path = write(tmp_path / "recipes" / "r.yaml",
                 "data:\n  source:\n    train: data/a.jsonl\n    test: ../b.jsonl\n  target:\n    test: /abs/c.jsonl\n")
    monkeypatch.chdir(tmp_path)
    r = load_recipe(path, [])
    assert r.data.source.train == str((tmp_path / "recipes" / "data" / "a.jsonl").resolve())
    assert r.data.source.test == str((tmp_path / "b.jsonl").resolve())
    assert r.data.target.test == "/abs/c.jsonl"


def test_paths_in_overrides_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    path = write(tmp_path / "recipes" / "r.yaml", "seed: 1\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = load_recipe(path, REQUIRED + ["output_dir=runs/x"])
    assert r.data.source.train == str((work / "s.jsonl").resolve())
    assert r.output_dir == str((work / "runs" / "x").resolve())


def test_cwd_argument_is_the_base_of_override_paths(tmp_path):
    r = load(["data.source.dev=dev.jsonl"], cwd=tmp_path)
    assert r.data.source.dev == str((tmp_path / "dev.jsonl").resolve())
    assert Path(r.data.source.train).is_absolute()


def test_builtin_and_hub_specs_are_not_paths():
    r = load(["data.target.unlabeled=builtin:reviews/unlabeled", "data.target.dev=hub:user/data?split=validation"])
    assert r.data.target.unlabeled == "builtin:reviews/unlabeled"
    assert r.data.target.dev == "hub:user/data?split=validation"


def test_hub_model_ids_are_not_paths(tmp_path):
    assert load(["model.name_or_path=bert-base-uncased"], cwd=tmp_path).model.name_or_path == "bert-base-uncased"
    path = write(tmp_path / "r.yaml", "model:\n  name_or_path: user/model\n")
    assert load([], path).model.name_or_path == "user/model"


def test_existing_local_model_directory_becomes_absolute(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    path = write(tmp_path / "r.yaml", "model:\n  name_or_path: models/tiny\n")
    assert load([], path).model.name_or_path == str((tmp_path / "models" / "tiny").resolve())


def test_resume_keywords_are_not_paths(tmp_path):
    assert load(["train.resume=auto"], cwd=tmp_path).train.resume == "auto"
    assert load(["train.resume=never"], cwd=tmp_path).train.resume == "never"
    assert load(["train.resume=ckpt"], cwd=tmp_path).train.resume == str((tmp_path / "ckpt").resolve())


# ----------------------------------------------------------------------------------------------------------
# Files.


def test_missing_recipe_file_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "nope.yaml")
    assert "recipe file not found" in only(err.value.problems)


def test_broken_yaml_is_a_clear_error(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n  lr: [1, 2\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "not valid YAML" in only(err.value.problems)


def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path / "r.yaml", "- a\n- b\n"))
    assert "mapping" in only(err.value.problems)


def test_every_shipped_recipe_validates():
    paths = sorted((REPO / "recipes").glob("*.yaml"))
    assert paths, f"no recipes in {REPO / 'recipes'}"
    failures = {}
    for path in paths:
        try:
            assert load_recipe(path).name == path.stem
        except RecipeError as err:
            failures[path.name] = err.problems
    assert not failures, failures
