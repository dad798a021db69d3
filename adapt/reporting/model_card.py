"""The model card of a pushed run (its `README.md` on the Hub), built from the run directory alone.

Metadata the Hub indexes: `base_model` (a Hub id, never a local path), `library_name` (`peft` for an adapter,
`transformers` for a full model), `pipeline_tag`, `datasets` (the recipe's `hub:` splits), `license` and a
`model-index` with accuracy and macro-F1 of every test split. The body, for people (`templates/model_card.md.j2`):
results per split, the method, the data (with the project's data-card summaries), limitations, how to load the
model, and the recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from adapt.core.errors import AdaptError
from adapt.core.formatting import pct, pct_interval
from adapt.core.rundir import RunDir, portable_paths
from adapt.hub.ids import CANONICAL_IDS, hub_model_id
from adapt.methods import describe
from adapt.model.init_run import start_text
from adapt.reporting.context import split_order
from adapt.reporting.templating import render_template

TASK = "text-classification"
DATA_CARDS = Path(__file__).resolve().parents[2] / "data_cards"  # in a source checkout only
# Split specs whose data card is not named after a part of the spec itself.
DATA_CARD_OF_PREFIX = {"builtin:reviews": "builtin_reviews", "amazon:": "amazon_multidomain"}
SPLIT_PARTS = ("train", "dev", "test", "unlabeled")


def hub_dataset(spec: str | None) -> tuple[str, str | None, str] | None:
    """(dataset id, config, split) of a `hub:` split spec; None for any other spec."""
    if not spec or not spec.startswith("hub:"):
        return None
    url = urlparse(spec[len("hub:"):])
    query = parse_qs(url.query)
    return url.path, query.get("config", [None])[0], query.get("split", ["train"])[0]


def data_specs(recipe: dict) -> dict[str, str]:
    """`source_train` -> its spec, for every split the recipe names."""
    data = recipe["data"]
    return {f"{role}_{part}": data[role][part] for role in ("source", "target") for part in SPLIT_PARTS
            if data[role].get(part)}


def hub_datasets(recipe: dict) -> list[str]:
    ids = [hub_dataset(spec)[0] for spec in data_specs(recipe).values() if hub_dataset(spec)]
    return sorted(set(ids))


def base_license(report: dict) -> str | None:
    """The base model's licence, from the card of its local copy (the embedded MiniLM's is apache-2.0); None when
    the base model has no local card, which then has to be given (`--license`)."""
    path = Path(report["model"].get("resolved_path", ""))
    if report["model"]["name_or_path"] in (*CANONICAL_IDS, *CANONICAL_IDS.values()):
        from adapt.model.loading import embedded_model_path  # imports torch: only when needed

        try:
            path = Path(embedded_model_path())  # also when the run loaded it from the Hub: the same model and card
        except AdaptError:
            pass
    if not (path / "README.md").is_file():
        return None
    return ModelCard.load(path / "README.md", ignore_metadata_errors=True).data.get("license")


# ----------------------------------------------------------------------------------------------------------
# Metadata.


def _dataset_label(spec: str | None, split: dict) -> tuple[str, str | None, str | None]:
    """(dataset id or name, config, split) for a split's `model-index` entry."""
    hub = hub_dataset(spec)
    if hub is not None:
        return hub
    if spec and spec.startswith(("builtin:", "amazon:")):
        return spec.split("/")[0], None, "test"
    return Path(spec).stem if spec else split["domain"], None, "test"


def eval_results(report: dict, recipe: dict) -> list[EvalResult]:
    """Accuracy and macro-F1 of every test split (source and target), as the Hub's `model-index` has them."""
    specs = data_specs(recipe)
    results = []
    for name, s in report["splits"].items():
        if s.get("kind", "test") != "test":
            continue
        dataset, config, split = _dataset_label(specs.get(name), s)
        common = {"task_type": TASK, "task_name": "Text classification", "dataset_type": dataset,
                  "dataset_name": f"{s['domain']} ({s['role']} domain, {name})", "dataset_config": config,
                  "dataset_split": split}
        results.append(EvalResult(**common, metric_type="accuracy", metric_name="accuracy", metric_value=s["accuracy"]))
        results.append(EvalResult(**common, metric_type="f1", metric_name="macro-F1", metric_value=s["macro_f1"],
                                  metric_args={"average": "macro"}))
    return results


def card_data(report: dict, recipe: dict, *, model_name: str, library_name: str, license: str | None) -> ModelCardData:
    peft_type = "lora" if report["model"]["finetune"] == "lora" else (report["model"].get("peft") or {}).get("type")
    tags = ["adapt", "domain-adaptation", report["method"]] + ([peft_type] if peft_type else [])
    results = eval_results(report, recipe)
    return ModelCardData(
        base_model=hub_model_id(report["model"]["name_or_path"]), library_name=library_name, pipeline_tag=TASK,
        license=license, datasets=hub_datasets(recipe) or None, metrics=["accuracy", "f1"], tags=tags,
        model_name=model_name, eval_results=results or None,
    )


# ----------------------------------------------------------------------------------------------------------
# Body.


def card_context(report: dict, recipe: dict, recipe_yaml: str, *, repo_id: str, adapter: bool) -> dict:
    """The plain context of `model_card.md.j2`, numbers formatted."""
    m, s, data = report["model"], report["summary"], recipe["data"]
    tr = report.get("training", {})
    sel = tr.get("selection", {})
    env = report.get("environment", {})
    specs = data_specs(recipe)
    cards = {c[0]: c[1] for c in map(data_card_summary, specs.values()) if c}  # one entry per card
    return {
        "name": repo_id.split("/")[-1], "repo_id": repo_id, "labels": report["labels"], "method": report["method"],
        "method_description": describe(report["method"]), "base_model": hub_model_id(m["name_or_path"]),
        "base_model_dir": Path(m["name_or_path"]).name,
        "source_domain": data["source"].get("domain"), "target_domain": data["target"].get("domain"),
        "gap": {"source": pct(s["source_accuracy"]), "target": pct(s["target_accuracy"]),
                "points": pct(s["transfer_gap"])} if "transfer_gap" in s else None,
        "splits": [_split_row(name, report["splits"][name]) for name in split_order(report["splits"])],
        "test_splits": [x for x in report["splits"].values() if x.get("kind", "test") == "test"],
        "model": {"finetune": m["finetune"], "lora": m.get("lora"), "peft": m.get("peft"), "params_trainable": f"{m['params_trainable']:,}",
                  "params_total": f"{m['params_total']:,}", "start": start_text(m)},
        "training": {"optimizer_steps": tr.get("optimizer_steps", "?"),
                     "effective_batch_size": tr.get("effective_batch_size", "?"),
                     "selection_split": sel.get("split", "–"), "selection_metric": sel.get("metric", "–"),
                     "best_step": sel.get("best_step", "–"), "selected_on_target": sel.get("split", "").startswith("target")},
        "data": [_data_row(name, spec, data) for name, spec in specs.items()], "data_cards": list(cards.items()),
        "max_length": data["max_length"], "truncation": data["truncation"], "normalize": data.get("normalize", "none"),
        "adapter": adapter, "merged": m["finetune"] in ("lora", "peft") and not adapter,
        "recipe_yaml": recipe_yaml.rstrip(),
        "git_commit": env.get("git_commit", "?"), "device": env.get("device", "?"),
        "versions": list(env.get("versions", {}).items()),
    }


def _split_row(name: str, x: dict) -> dict:
    ci = x.get("ci95", {})
    return {"name": name, "role": x["role"], "domain": x["domain"], "n": x["n"],
            "accuracy": pct_interval(x["accuracy"], ci.get("accuracy")),
            "macro_f1": pct_interval(x["macro_f1"], ci.get("macro_f1"))}


def _data_row(name: str, spec: str, data: dict) -> dict:
    """How the card names a split's data: a link for a Hub dataset, the spec of a built-in corpus, the bare file
    name of a local file (its directory means nothing to a reader)."""
    hub = hub_dataset(spec)
    return {"name": name, "domain": data[name.split("_")[0]].get("domain") or "–", "spec": spec,
            "hub": {"id": hub[0], "config": hub[1], "split": hub[2]} if hub else None,
            "builtin": spec.startswith(("builtin:", "amazon:")), "file": Path(spec).name}


def data_card_summary(spec: str) -> tuple[str, str] | None:
    """(title, first paragraph) of the project data card describing `spec`, when there is one."""
    stem = next((card for prefix, card in DATA_CARD_OF_PREFIX.items() if spec.startswith(prefix)), None)
    if stem is None:
        stem = next((p.stem for p in sorted(DATA_CARDS.glob("*.md")) if p.stem in spec), None)
    path = DATA_CARDS / f"{stem}.md"
    if stem is None or not path.is_file():
        return None
    title, _, rest = path.read_text().partition("\n")
    paragraph = rest.strip().split("\n\n")[0]
    return title.removeprefix("# ").removeprefix("Data card: "), " ".join(paragraph.split())


def shared_record(run: RunDir) -> tuple[dict, dict]:
    """report.json and recipe.yaml as they are shared: every path of this machine made portable (`<run>/...` inside
    the run folder, else the file or folder name; `core.rundir.portable_paths`). The run folder keeps its own."""
    report = json.loads(run.report_json.read_text())
    recipe = yaml.safe_load(run.recipe.read_text())
    root = recipe.get("output_dir") or str(run.root.resolve())  # what the recorded paths were written against
    return portable_paths(report, root), portable_paths(recipe, root)


def build_model_card(run_dir: Path, *, repo_id: str, adapter: bool, license: str | None = None) -> ModelCard:
    """The card for `run_dir` pushed to `repo_id` as an adapter (`adapter=True`) or a full model. `license`
    defaults to the base model's (see `base_license`).

    Like trl: the metadata from `ModelCardData`, the body from our packaged template. Rendered through our own
    Jinja2 environment rather than `ModelCard.from_template`, which uses a bare `jinja2.Template` (an undefined
    name renders as nothing, the final newline is dropped)."""
    run = RunDir(run_dir)
    # The licence from this machine's copy of the base model; everything shown, with no path of this machine.
    license = license or base_license(json.loads(run.report_json.read_text()))
    report, recipe = shared_record(run)
    recipe_yaml = yaml.safe_dump(recipe, sort_keys=False)
    data = card_data(report, recipe, model_name=repo_id.split("/")[-1], library_name="peft" if adapter else "transformers",
                     license=license)
    context = card_context(report, recipe, recipe_yaml, repo_id=repo_id, adapter=adapter)
    return ModelCard(render_template("model_card.md.j2", card_data=data.to_yaml(), **context))
