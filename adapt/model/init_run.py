"""Stacking runs (`model.init_from`): the finished run a new run starts from, checked from its files alone (no torch,
so `adapt validate` and the start of a run check it in milliseconds), and the chain of runs the report records.

A run started from another run's classifier records `{"run", "name", "method", "base", "chain"}` in its report's
`model.init_from`, where `chain` is every run it stacks on, oldest first, ending with the init run itself: a third
stage (dapt -> self_training -> distill) lists both earlier runs, the first read from the init run's own report.
Paths are this machine's, as everywhere in report.json; a pushed report shares them as `./<run name>`
(`core.rundir.portable_paths`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.core.rundir import RunDir
from adapt.hub.ids import CANONICAL_IDS, hub_model_id

KEY = "`model.init_from`"


@dataclass(frozen=True)
class InitRun:
    run: RunDir
    report: dict

    @property
    def model_dir(self) -> Path:
        return self.run.model

    @property
    def labels(self) -> list[str]:
        return list(self.report["labels"])

    @property
    def base(self) -> str:
        """The pretrained model at the bottom of the chain (a stacked run's report already records its base as
        its `model.name_or_path`)."""
        return self.report["model"]["name_or_path"]

    def record(self) -> dict:
        """The new run's report entry: this run, its base, and the whole chain, oldest first."""
        own = {"run": str(self.run.root), "name": self.report.get("name") or self.run.root.name,
               "method": self.report.get("method", "?")}
        earlier = (self.report["model"].get("init_from") or {}).get("chain", [])
        return {**own, "base": self.base, "chain": [*earlier, own]}


def read_init_run(path: str) -> InitRun:
    """The finished run at `path`, or an AdaptError saying what it is instead and what to do."""
    run = RunDir(Path(path))
    fix = "give the folder of a finished run (one with report.json and model/)"
    if not run.root.exists():
        raise AdaptError(f"{KEY}: {path} does not exist; {fix}")
    if not run.root.is_dir():
        raise AdaptError(f"{KEY}: {path} is a file, not a run folder; {fix}")
    if not run.is_finished():
        if run.latest_checkpoint() is not None or run.recipe.is_file():
            raise AdaptError(f"{KEY}: {path} is an unfinished run (no report.json yet); let it finish (`adapt train` "
                             "on its recipe.yaml continues it), then start from it")
        raise AdaptError(f"{KEY}: {path} is not a run folder (no report.json); {fix}")
    if not (run.model / "config.json").is_file():
        raise AdaptError(f"{KEY}: {path} has a report.json but no model/ (or no model/config.json); {fix}")
    try:
        report = json.loads(run.report_json.read_text())
        readable = isinstance(report["labels"], list) and isinstance(report["model"]["name_or_path"], str)
    except (ValueError, KeyError, TypeError):
        readable = False
    if not readable:
        raise AdaptError(f"{KEY}: {run.report_json} is not a run's report (no labels or model); {fix}")
    return InitRun(run, report)


def label_problem(init: InitRun, label_names: list[str]) -> str | None:
    """A classifier's head outputs its labels in its own order: another order would silently swap classes."""
    if init.labels == list(label_names):
        return None
    return (f"{KEY}: the run {init.run.root} was trained on the labels {init.labels}, but this run's labels are "
            f"{list(label_names)}; the labels must be the same names in the same order: set `data.label_names` to "
            f"{init.labels} (the data must use those labels), or start from a run trained on this run's labels")


def _same_model(a: str, b: str) -> bool:
    a, b = CANONICAL_IDS.get(a, a), CANONICAL_IDS.get(b, b)
    return a == b or (os.path.isdir(a) and os.path.isdir(b) and Path(a).resolve() == Path(b).resolve())


def base_problem(init: InitRun, name_or_path: str, default: str) -> str | None:
    """`model.name_or_path` left at its default is not used with `init_from`; a value set on purpose must name
    the init run's base, or the recipe would say one model and train another."""
    if name_or_path == default or _same_model(name_or_path, init.base):
        return None
    return (f"`model.name_or_path` is {name_or_path!r}, but {KEY} starts from the run {init.run.root}, whose "
            f"model was trained from {init.base!r}; set `model.name_or_path` to {init.base!r} or remove it "
            "(with `init_from` the model comes from that run)")


def chain_text(init_from: dict) -> str:
    """`run `st-books` (self_training) ← `dapt-books` (dapt) ← all-MiniLM-L6-v2`: newest first, down to the base."""
    runs = [f"`{r['name']}` ({r['method']})" for r in reversed(init_from.get("chain") or [init_from])]
    base = init_from.get("base", "?")
    return "run " + " ← ".join([*runs, hub_model_id(base) or Path(base).name])  # a local base: its folder name


def layers_text(layers: dict) -> str:
    return (f"{len(layers['kept'])} of {layers['of']} encoder layers kept ({layers['choice']}: "
            f"{', '.join(map(str, layers['kept']))}), {layers['params_before']:,} → {layers['params_after']:,} parameters")


def start_text(model: dict) -> str | None:
    """One line on where a run's model started, from its report's `model` entry; None for a pretrained model as it
    is (and for reports older than `init_from` and `num_layers`)."""
    parts = []
    if model.get("init_from"):
        parts.append("Started from " + chain_text(model["init_from"]))
    if model.get("layers"):
        parts.append(layers_text(model["layers"]))
    return "; ".join(parts) or None
