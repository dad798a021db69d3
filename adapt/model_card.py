"""The model card of a pushed run (its `README.md` on the Hub), built from the run directory alone.

Metadata the Hub indexes: `base_model` (a Hub id, never a local path), `library_name` (`peft` for an adapter,
`transformers` for a full model), `pipeline_tag`, `datasets` (the recipe's `hub:` splits), `license` and a
`model-index` with accuracy and macro-F1 of every test split. The body, for people: results per split, the method,
the data (with the project's data-card summaries), limitations, how to load the model, and the recipe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from adapt.errors import AdaptError
from adapt.rundir import RunDir

TASK = "text-classification"
# The recipe may name the embedded encoder by its short name; on the Hub it lives under its organisation.
CANONICAL_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
DATA_CARDS = Path(__file__).resolve().parent.parent / "data_cards"  # in a source checkout only
# Split specs whose data card is not named after a part of the spec itself.
DATA_CARD_OF_PREFIX = {"builtin:reviews": "builtin_reviews", "amazon:": "amazon_multidomain"}
METHODS = {
    "source_only": "supervised training on the labelled source domain (plus labelled target data when given); no "
                   "adaptation, the baseline",
    "sequential": "supervised training on the source, then on the few labelled target examples",
    "dapt": "masked-LM training on unlabelled target-domain text, then supervised fine-tuning (Gururangan et al. 2020)",
    "tapt": "masked-LM training on the task's own training texts, then supervised fine-tuning (Gururangan et al. 2020)",
    "udalm": "a masked-LM phase, then supervised loss on the source plus masked-LM loss on unlabelled target text at "
             "every step (Karouzos et al. 2021)",
    "dann": "domain-adversarial training: a domain discriminator behind a gradient-reversal layer pushes the encoder "
            "towards features shared by both domains (Ganin et al. 2016)",
    "self_training": "rounds of confident, class-balanced pseudo-labels on unlabelled target text, retraining on source "
                     "plus pseudo-labelled target",
}
SPLIT_PARTS = ("train", "dev", "test", "unlabeled")


def hub_model_id(name_or_path: str) -> str | None:
    """The Hub id a recipe's `model.name_or_path` names, or None for a local directory.

    Recipes store a local model as an absolute path (`adapt.recipe` resolves them) and leave a Hub id as written,
    so the spelling alone decides; whether a directory of that name exists on this machine does not matter.
    """
    name = CANONICAL_IDS.get(name_or_path, name_or_path)
    if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1:
        return None
    return name


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
        from adapt.modeling import _embedded_path  # modeling imports torch: only when needed

        try:
            path = Path(_embedded_path())  # also when the run loaded it from the Hub: the same model and card
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
    tags = ["adapt", "domain-adaptation", report["method"]] + (["lora"] if report["model"]["finetune"] == "lora" else [])
    results = eval_results(report, recipe)
    return ModelCardData(
        base_model=hub_model_id(report["model"]["name_or_path"]), library_name=library_name, pipeline_tag=TASK,
        license=license, datasets=hub_datasets(recipe) or None, metrics=["accuracy", "f1"], tags=tags,
        model_name=model_name, eval_results=results or None,
    )


# ----------------------------------------------------------------------------------------------------------
# Body.


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(split: dict, metric: str) -> str:
    lo_hi = split.get("ci95", {}).get(metric)
    return f" [{_pct(lo_hi[0])}, {_pct(lo_hi[1])}]" if lo_hi else ""


def _results(report: dict) -> list[str]:
    s = report["summary"]
    lines = ["## Results", ""]
    if "transfer_gap" in s:
        lines += [f"Source test accuracy **{_pct(s['source_accuracy'])}**, target test accuracy "
                  f"**{_pct(s['target_accuracy'])}** (a gap of {100 * s['transfer_gap']:.1f} points).", ""]
    lines += ["| split | role | domain | n | accuracy (95% CI) | macro-F1 (95% CI) |", "|---|---|---|---:|---:|---:|"]
    splits = report["splits"]
    for name in sorted(splits, key=lambda n: (splits[n].get("kind") != "test", splits[n]["role"] != "source", n)):
        x = splits[name]
        lines.append(f"| {name} | {x['role']} | {x['domain']} | {x['n']} | {_pct(x['accuracy'])}{_ci(x, 'accuracy')} | "
                     f"{_pct(x['macro_f1'])}{_ci(x, 'macro_f1')} |")
    return [*lines, ""]


def _method(report: dict) -> list[str]:
    m, tr = report["model"], report.get("training", {})
    sel = tr.get("selection", {})
    lora = f" (r={m['lora']['r']}, alpha={m['lora']['alpha']}, on {', '.join(m['lora']['target_modules'])})" if "lora" in m else ""
    return [
        "## Method", "",
        f"`{report['method']}`: {METHODS.get(report['method'], 'see the adapt documentation')}.", "",
        f"Fine-tuning `{m['finetune']}`{lora}: {m['params_trainable']:,} of {m['params_total']:,} parameters trained. "
        f"{tr.get('optimizer_steps', '?')} optimizer steps, effective batch {tr.get('effective_batch_size', '?')}; "
        f"model selection on `{sel.get('split', '–')}` by {sel.get('metric', '–')} (best at step {sel.get('best_step', '–')}).",
        "",
    ]


def _spec_text(spec: str) -> str:
    hub = hub_dataset(spec)
    if hub is not None:
        return f"[{hub[0]}](https://huggingface.co/datasets/{hub[0]}) (split `{hub[2]}`" + (f", config `{hub[1]}`)" if hub[1] else ")")
    return f"`{spec}`" if spec.startswith(("builtin:", "amazon:")) else f"`{Path(spec).name}` (a local file)"


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


def _data(recipe: dict) -> list[str]:
    specs = data_specs(recipe)
    data = recipe["data"]
    lines = ["## Data", "", "| split | data | domain |", "|---|---|---|"]
    lines += [f"| {name} | {_spec_text(spec)} | {data[name.split('_')[0]].get('domain') or '–'} |"
              for name, spec in specs.items()]
    cards = {s[0]: s[1] for s in map(data_card_summary, specs.values()) if s}
    lines.append("")
    for title, summary in cards.items():
        lines += [f"**{title}** (data card in the adapt repository, `data_cards/`): {summary}", ""]
    return lines


def _limitations(report: dict, recipe: dict) -> list[str]:
    splits, data = report["splits"], recipe["data"]
    tests = [f"{s['n']} {s['role']}-domain ({s['domain']})" for s in splits.values() if s.get("kind", "test") == "test"]
    target = data["target"].get("domain") or "target"
    lines = [
        "## Limitations", "",
        f"- Measured only on the test splits above ({', '.join(tests)} examples); small test sets give wide intervals.",
        f"- Domain shift: trained on labelled {data['source'].get('domain') or 'source'} data; the target results hold "
        f"for {target} text like the test split. Other domains, languages or time periods were not measured and may "
        "score lower.",
        f"- Always picks one of {', '.join(report['labels'])}; there is no \"none of these\".",
        f"- Texts are cut to {data['max_length']} tokens (`{data['truncation']}` truncation) as in training.",
    ]
    if report.get("training", {}).get("selection", {}).get("split", "").startswith("target"):
        lines.append("- Model selection used labelled target data, so the target results are not purely unsupervised.")
    if data.get("normalize", "none") != "none":
        lines.append(f"- Training rewrote every text with `{data['normalize']}`; apply the same rewriting "
                     "(`adapt.predict` does) for comparable predictions.")
    if hub_model_id(report["model"]["name_or_path"]) is None:
        lines.append(f"- The base model was a local model (`{Path(report['model']['name_or_path']).name}`), not a Hub "
                     "model: an adapter needs that model to load.")
    return [*lines, ""]


def _usage(repo_id: str, adapter: bool, merged: bool, max_length: int) -> list[str]:
    call = f'classifier("a sturdy pan, works well", truncation=True, max_length={max_length}, top_k=None)'
    if adapter:
        code = [
            "from peft import AutoPeftModelForSequenceClassification",
            "from transformers import AutoConfig, AutoTokenizer, pipeline", "",
            f'labels = AutoConfig.from_pretrained("{repo_id}")  # the label names, saved beside the adapter',
            "model = AutoPeftModelForSequenceClassification.from_pretrained(",
            f'    "{repo_id}", id2label=labels.id2label, label2id=labels.label2id)',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            'classifier = pipeline("text-classification", model=model, tokenizer=tokenizer)', call,
        ]
    else:
        code = [
            "from transformers import pipeline", "",
            f'classifier = pipeline("text-classification", model="{repo_id}")', call, "",
            "# or: AutoModelForSequenceClassification.from_pretrained(...) and AutoTokenizer.from_pretrained(...)",
        ]
    what = ("a LoRA adapter (with its classifier head) for the base model" if adapter else
            "a full transformers model" + (" (the LoRA adapter merged into its base model)" if merged else ""))
    return ["## How to use", "", f"This repository holds {what}.", "", "```python", *code, "```", "",
            "With adapt (tokenises exactly as in training):", "", "```bash",
            f"python -m adapt.predict {repo_id} --input texts.jsonl --output predictions.jsonl", "```", ""]


def _environment(report: dict) -> list[str]:
    env = report.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    return ["## Training environment", "",
            f"Trained with adapt (git commit `{env.get('git_commit', '?')}`) on {env.get('device', '?')}; {versions}.", ""]


def card_body(report: dict, recipe: dict, recipe_yaml: str, *, repo_id: str, adapter: bool) -> str:
    base = hub_model_id(report["model"]["name_or_path"])
    base_text = f"[{base}](https://huggingface.co/{base})" if base else f"a local model (`{Path(report['model']['name_or_path']).name}`)"
    source, target = recipe["data"]["source"].get("domain"), recipe["data"]["target"].get("domain")
    lines = [
        f"# {repo_id.split('/')[-1]}", "",
        f"A text classifier ({', '.join(report['labels'])}) fine-tuned from {base_text} with "
        f"adapt, for domain adaptation: trained on **{source or 'the source domain'}**, "
        f"evaluated on **{target or 'the target domain'}** with the `{report['method']}` method.", "",
        *_results(report), *_method(report), *_data(recipe), *_limitations(report, recipe),
        *_usage(repo_id, adapter, report["model"]["finetune"] == "lora" and not adapter, recipe["data"]["max_length"]),
        "## Recipe", "", "The resolved recipe of the run (`recipe.yaml`, also in this repository):", "",
        "```yaml", recipe_yaml.rstrip(), "```", "", *_environment(report),
    ]
    return "\n".join(lines)


def build_model_card(run_dir: Path, *, repo_id: str, adapter: bool, license: str | None = None) -> ModelCard:
    """The card for `run_dir` pushed to `repo_id` as an adapter (`adapter=True`) or a full model. `license`
    defaults to the base model's (see `base_license`)."""
    run = RunDir(run_dir)
    report = json.loads(run.report_json.read_text())
    recipe_yaml = run.recipe.read_text()
    recipe = yaml.safe_load(recipe_yaml)
    data = card_data(report, recipe, model_name=repo_id.split("/")[-1], library_name="peft" if adapter else "transformers",
                     license=license or base_license(report))
    body = card_body(report, recipe, recipe_yaml, repo_id=repo_id, adapter=adapter)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")
