"""Push a finished run to the Hub in one commit: the model (adapter + head, full, or LoRA merged), the tokenizer,
report.md, report.json, recipe.yaml and the model card (see `adapt.hub.__main__` for the command)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import yaml

from adapt.core.errors import AdaptError
from adapt.core.fileio import staged_dir
from adapt.core.rundir import RunDir
from adapt.hub.ids import hub_model_id
from adapt.hub.reachability import hub_reachable
from adapt.reporting.model_card import build_model_card, shared_record
from adapt.reporting.report import render_run_markdown

RUN_FILES = ("report.md", "report.json", "recipe.yaml")  # what of the run directory itself is uploaded
# Keys transformers writes into tokenizer_config.json that record how *this* machine loaded the tokenizer
# (from a directory, offline): on the Hub they would be false.
MACHINE_TOKENIZER_KEYS = ("is_local", "local_files_only")


# ----------------------------------------------------------------------------------------------------------
# Checks that run before anything is built or uploaded.


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise AdaptError(f"the Hub repository id {repo_id!r} is not valid ({err}); give USER/NAME") from None
    if repo_id.count("/") != 1:
        raise AdaptError(f"the Hub repository id {repo_id!r} must look like USER/NAME (or ORG/NAME)")


def check_can_push(repo_id: str) -> None:
    """Fail in seconds when a push cannot succeed (bad id, Hub unreachable, no token), before any work is done."""
    check_repo_id(repo_id)
    if not hub_reachable():
        raise AdaptError(
            f"cannot push to the Hub repository {repo_id!r}: the Hugging Face Hub is unreachable (offline or "
            "HF_HUB_OFFLINE=1); nothing was uploaded. Push the run later with `python -m adapt.hub push RUN_DIR "
            f"--repo-id {repo_id}` (`--dry-run DIR` writes what it would upload); a recipe trains without pushing "
            "with hub.push=false."
        )
    from huggingface_hub import get_token

    if get_token() is None:
        raise AdaptError(f"cannot push to {repo_id!r}: no Hugging Face token; set HF_TOKEN or run `hf auth login`. "
                         "Nothing was uploaded.")


def check_run(run_dir: Path) -> Path:
    """`run_dir` if it is a finished run with a saved model, else an error saying what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AdaptError(f"{run_dir} is not a directory; give a finished run directory")
    if not (run_dir / "report.json").is_file() or not (run_dir / "recipe.yaml").is_file():
        raise AdaptError(f"{run_dir} is not a finished run (report.json and recipe.yaml are written when training "
                         "ends); push a run directory that finished")
    if not (run_dir / "model" / "config.json").is_file():
        raise AdaptError(f"{run_dir} has no saved model (model/config.json); did the run finish?")
    return run_dir


# ----------------------------------------------------------------------------------------------------------
# The folder that is uploaded.


class PushFolder(NamedTuple):
    path: Path
    adapter: bool  # a LoRA adapter + head (peft), rather than a full transformers model
    files: list[str]  # relative paths, sorted
    license: str | None  # the card's licence; None when neither given nor known from the base model


def _copy_model(model_dir: Path, out: Path, merged: bool) -> bool:
    """The model and tokenizer files into `out`; returns whether they are an adapter."""
    adapter = (model_dir / "adapter_config.json").is_file()
    merge = merged and adapter
    replaced = {"README.md"}  # peft's placeholder card: the folder gets the run's model card instead
    if merge:  # the merged model's config.json and weights take the adapter's place
        replaced |= {f.name for f in model_dir.glob("adapter_*")} | {"config.json"}
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and f.name not in replaced:
            shutil.copy2(f, out / f.name)
    if merge:
        from adapt.serving.export import plain_model

        plain_model(model_dir)[0].save_pretrained(str(out))  # config.json (with id2label) + model.safetensors
    return adapter and not merge


def _for_the_hub(out: Path, base_model: str | None, adapter: bool) -> None:
    """Rewrite what only makes sense on this machine: an adapter's base-model path, when the recipe named a Hub id
    (runs saved before adapters recorded the id), and the tokenizer's local-loading flags."""
    if adapter and base_model is not None:
        from adapt.model.saving import set_adapter_base

        set_adapter_base(out / "adapter_config.json", base_model)
    tok_cfg = out / "tokenizer_config.json"
    if tok_cfg.is_file():
        cfg = json.loads(tok_cfg.read_text())
        if any(k in cfg for k in MACHINE_TOKENIZER_KEYS):
            tok_cfg.write_text(json.dumps({k: v for k, v in cfg.items() if k not in MACHINE_TOKENIZER_KEYS}, indent=2) + "\n")


def _write_run_files(run: RunDir, out: Path) -> None:
    """RUN_FILES with every path of this machine made portable: a home or temporary folder's name is nobody's
    business on the Hub."""
    report, recipe = shared_record(run)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (out / "report.md").write_text(render_run_markdown(run, report))


def build_push_folder(run_dir: Path, out: Path, *, repo_id: str, merged: bool = False,
                      license: str | None = None) -> PushFolder:
    """Fill the empty directory `out` with what a push of `run_dir` to `repo_id` uploads."""
    run_dir = check_run(run_dir)
    adapter = _copy_model(run_dir / "model", out, merged)
    report = json.loads((run_dir / "report.json").read_text())
    _for_the_hub(out, hub_model_id(report["model"]["name_or_path"]), adapter)
    _write_run_files(RunDir(run_dir), out)
    card = build_model_card(run_dir, repo_id=repo_id, adapter=adapter, license=license)
    card.save(out / "README.md")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return PushFolder(out, adapter, files, card.data.license)


def write_push_folder(run_dir: Path, out: Path, *, repo_id: str, merged: bool = False,
                      license: str | None = None) -> PushFolder:
    """`--dry-run`: write to `out` (new or empty) exactly what a push uploads; nothing leaves the machine."""
    check_repo_id(repo_id)
    check_run(run_dir)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AdaptError(f"--dry-run {out} exists and is not an empty directory; choose a new one (nothing was changed)")
    with staged_dir(out, "--dry-run") as tmp:
        folder = build_push_folder(run_dir, tmp, repo_id=repo_id, merged=merged, license=license)
    return folder._replace(path=out)


# ----------------------------------------------------------------------------------------------------------
# Uploading.


def commit_message(run_dir: Path, folder: PushFolder, merged: bool) -> str:
    report = json.loads((Path(run_dir) / "report.json").read_text())
    what = "LoRA adapter" if folder.adapter else ("LoRA-merged model" if merged else "model")
    domains = {s["role"]: s["domain"] for s in report["splits"].values()}
    shift = f", {domains['source']} -> {domains['target']}" if {"source", "target"} <= domains.keys() else ""
    return f"Upload {what} from adapt run {report.get('name') or Path(run_dir).name} ({report['method']}{shift})"


def _check_private(api, repo_id: str, private: bool) -> None:
    # `create_repo(exist_ok=True)` leaves an existing repository's visibility as it is: a model meant to be
    # private must not land in a public repository.
    if private and not api.repo_info(repo_id).private:
        raise AdaptError(f"{repo_id!r} already exists and is public, and --private (hub.private) was asked for; "
                         "nothing was uploaded. Make it private on the Hub, or push to a new repository.")


def upload_folder(folder: PushFolder, repo_id: str, *, private: bool, revision: str | None, message: str) -> str:
    """One commit of `folder` to `repo_id` (created if needed) on `revision` (a branch, created if needed); returns
    the URL of the revision."""
    from huggingface_hub import HfApi

    api = HfApi()  # the token comes from HF_TOKEN or `hf auth login`, never from the recipe
    try:
        url = str(api.create_repo(repo_id, private=private, exist_ok=True))
        _check_private(api, repo_id, private)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder.path), revision=revision, commit_message=message)
    except AdaptError:
        raise
    except Exception as err:  # HTTP, network (httpx) and OS errors alike: the commit did not happen
        raise AdaptError(f"pushing to {repo_id!r} failed, no files were committed ({type(err).__name__}: {err}). The "
                         "repository (and branch) may have been created; run the push again.") from None
    return f"{url.rstrip('/')}/tree/{revision}" if revision else url


def warn_no_license(license: str | None) -> None:
    if license is None:
        print("note: the model card names no licence (the base model has no local card to take it from); give one "
              "with --license", file=sys.stderr)


def push_run(run_dir: Path, repo_id: str, *, private: bool = False, revision: str | None = None, merged: bool = False,
             license: str | None = None) -> str:
    """Upload a finished run to `repo_id` in one commit (what: see the module docstring); returns the URL."""
    check_can_push(repo_id)
    run_dir = check_run(run_dir)
    with tempfile.TemporaryDirectory(prefix="adapt-push-") as tmp:
        folder = build_push_folder(run_dir, Path(tmp), repo_id=repo_id, merged=merged, license=license)
        warn_no_license(folder.license)
        return upload_folder(folder, repo_id, private=private, revision=revision,
                             message=commit_message(run_dir, folder, merged))
