"""`hub.push`: the real huggingface_hub calls, intercepted (the Hub is unreachable here)."""

from __future__ import annotations

import pytest

import adapt.hub
import adapt.train
from adapt import load_recipe
from adapt.errors import AdaptError


class FakeApi:
    calls: list[tuple] = []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, commit_message):
        self.calls.append(("upload_folder", repo_id, folder_path, commit_message))

    def upload_file(self, path_or_fileobj, path_in_repo, repo_id, commit_message):
        self.calls.append(("upload_file", repo_id, path_in_repo))


def test_push_uploads_model_and_reports(tiny_recipe, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(adapt.train, "hub_reachable", lambda: True)
    monkeypatch.setattr(adapt.hub, "hub_reachable", lambda: True)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    out = tmp_path / "run"
    adapt.train.run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=1", "hub.push=true",
                                              "hub.repo_id=someone/tiny", "hub.private=true"]))
    assert FakeApi.calls[0] == ("create_repo", "someone/tiny", True)
    assert FakeApi.calls[1][0] == "upload_folder" and FakeApi.calls[1][2] == str(out / "model")
    assert {c[2] for c in FakeApi.calls[2:]} == {"report.md", "report.json"}
    assert "pushed to https://huggingface.co/someone/tiny" in capsys.readouterr().out
    for path in out.rglob("*"):  # the token never lands in the run directory
        if path.is_file():
            assert b"hf_secret_token_value" not in path.read_bytes()


def test_push_offline_says_nothing_was_uploaded(tmp_path, monkeypatch):
    monkeypatch.setattr(adapt.hub, "hub_reachable", lambda: False)
    with pytest.raises(AdaptError, match="nothing was uploaded"):
        adapt.hub.push_run(tmp_path, "someone/tiny")
