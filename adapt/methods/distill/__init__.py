"""`distill`: knowledge distillation from one or more finished teachers into the recipe's model (Hinton et al. 2015).

Each step: cross-entropy on a labelled source batch plus `alpha` * T^2 * KL(teacher || student) at temperature T on a
batch of the distillation texts (the unlabelled target texts and/or the source training texts). Several teachers
are an ensemble: their probabilities at temperature T are averaged. The teachers' probabilities are computed once,
when training starts, with each teacher's own tokenizer and tokenisation settings, and kept in `<run>/teacher/`.

This file is the method's card (options, registration, description, report lines); `method.py` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapt.core.fields import option
from adapt.methods.registry import register_method, register_options

TEXTS = ("target", "source")  # target: `data.target.unlabeled`; source: the labelled source training texts


@dataclass(frozen=True)
class DistillOptions:
    teachers: list[str] = option(
        None, "Teachers: finished run directories, classifier model folders (a run's model/, an `adapt export` or "
              "pushed folder) or Hub model ids, with the run's label names in the same order. Several are an "
              "ensemble (their probabilities at the temperature are averaged). Required for `distill`.",
        path=True, hub_id=True, factory=list)
    temperature: float = option(2.0, "Softmax temperature T of teacher and student in the distillation term (> 0).")
    alpha: float = option(1.0, "Weight of the distillation term: CE(source) + alpha * T^2 * KL(teacher ‖ student).")
    # Not `on`: YAML 1.1 reads an unquoted `on:` key as the boolean true.
    texts: list[str] = option(None, "Which texts get the distillation term: `target` (data.target.unlabeled) and/or "
                                    "`source` (the labelled source training texts).", factory=lambda: list(TEXTS))
    epochs: int | None = option(None, "Epochs over the labelled source data (null: train.epochs).")

    def problems(self) -> list[str]:  # checked for every recipe, so the defaults must pass (teachers: see `checks`)
        p = []
        if not self.temperature > 0:
            p.append(f"`method.distill.temperature` must be > 0, got {self.temperature}")
        if not self.alpha >= 0:
            p.append(f"`method.distill.alpha` must be >= 0, got {self.alpha}")
        if not self.texts or len(set(self.texts)) != len(self.texts) or not set(self.texts) <= set(TEXTS):
            p.append(f"`method.distill.texts` must be a non-empty list of distinct values from {list(TEXTS)}, got "
                     f"{self.texts}")
        if self.epochs is not None and self.epochs < 1:
            p.append(f"`method.distill.epochs` must be >= 1 or null, got {self.epochs}")
        if any(not isinstance(t, str) or not t.strip() for t in self.teachers):
            p.append(f"`method.distill.teachers` must hold paths or Hub model ids, got {self.teachers}")
        return p


def checks(recipe: Any) -> list[str]:
    """What `distill` needs from the rest of the recipe (run only when it is the method)."""
    cfg, p = recipe.method.distill, []
    if not cfg.teachers:
        p.append("method `distill` needs `method.distill.teachers`: a finished run directory, model folder or Hub model "
                 "id, e.g. train one first with `adapt train recipes/self_training.yaml output_dir=runs/teacher`, then "
                 "set `method.distill.teachers=[runs/teacher]`")
    if "target" in cfg.texts and not recipe.data.target.unlabeled:
        p.append("`method.distill.texts` includes `target`, which needs `data.target.unlabeled`; set it (e.g. "
                 "`data.target.unlabeled=path/to/file.jsonl`) or use `method.distill.texts=[source]`")
    return p


def _size(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _acc(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _speed_lines(teacher: dict, student: dict | None) -> list[str]:
    """Both timed on the same distillation texts, batch size and device (an ensemble: its members in turn)."""
    if not teacher:
        return []
    fmt = (lambda x: f"{x['texts_per_second']:.1f}")
    where = f"{teacher.get('texts')} texts, batch {teacher.get('batch_size')}, {teacher.get('device')}"
    if not student:
        return [f"| inference (texts/s; {where}) | {fmt(teacher)} | – |"]
    ratio = student["texts_per_second"] / max(teacher["texts_per_second"], 1e-9)
    return [f"| inference (texts/s; {where}) | {fmt(teacher)} | {fmt(student)} ({ratio:.2f}× the teacher) |"]


def report_lines(summary: dict) -> list[str]:
    """Teacher(s) and student side by side: size, test accuracy, inference speed; then what the teachers were."""
    t, s = summary.get("teacher"), summary.get("student")
    if not t or not s:
        return []
    splits = sorted(set(t.get("accuracy", {})) | set(s.get("accuracy", {})))
    note = "" if s.get("weights_bytes_measured", True) else " (estimated: parameters × bytes per parameter)"
    lines = [f"Distilled at temperature {summary['temperature']} with alpha {summary['alpha']} on "
             f"{', '.join(f'{k} ({v} texts)' for k, v in summary['rows'].items())}.", "",
             "| | teacher" + (" ensemble" if len(t["members"]) > 1 else "") + " | student |", "|---|---|---|",
             f"| parameters | {t['params_total']:,} | {s['params_total']:,} |",
             f"| weights on disk | {_size(t['weights_bytes'])} | {_size(s['weights_bytes'])}{note} |"]
    lines += [f"| {name} accuracy | {_acc(t['accuracy'].get(name))} | {_acc(s.get('accuracy', {}).get(name))} |"
              for name in splits]
    if s.get("agreement_target_test") is not None:
        lines.append(f"| agreement with the teacher on target_test | | {_acc(s['agreement_target_test'])} |")
    lines += _speed_lines(t.get("inference", {}), s.get("inference"))
    lines.append("")
    for m in t["members"]:
        lines.append(f"- teacher `{m['teacher']}`: {m['model_dir']} ({m['params_total']:,} parameters, "
                     f"{_size(m['weights_bytes'])}, max_length {m['max_length']}, truncation {m['truncation']})")
    return [*lines, ""]


register_options(DistillOptions, section="distill", help="`distill` settings.")
register_method(
    "distill",
    impl="adapt.methods.distill.method:Distill",
    description="knowledge distillation (Hinton et al. 2015): supervised loss on the source plus the KL divergence "
                "to the softened predictions of finished teacher model(s) on unlabelled target and source text",
    options=("distill",),
    checks=checks,  # `requires` cannot say "data.target.unlabeled, when `texts` has target"
    report_lines=report_lines,
)
