"""What report.md and report.html show: one plain context for both templates (`report.md.j2`,
`report.html.j2`), built from report.json, train_log.jsonl and diagnostics.json, with every number already
formatted. The Markdown pieces both pages share (lead sentence, method section, diagnostics) are the template
partials `_gap.md.j2`, `_method.md.j2` and `_diagnostics.md.j2`.
"""

from __future__ import annotations

from adapt.core.formatting import pct, pct_interval
from adapt.evaluation.label_free import CRITERIA
from adapt.methods import available_methods, method_spec
from adapt.model.init_run import start_text


def split_order(splits: dict) -> list[str]:
    """Test splits first, source before target."""
    return sorted(splits, key=lambda n: (splits[n].get("kind") != "test", splits[n]["role"] != "source", n))


def report_context(report: dict, log: list[dict], diagnostics: dict | None = None) -> dict:
    m, s, t, env = report["model"], report["summary"], report["timing"], report["environment"]
    return {
        "title": f"{report.get('name', 'run')}: {report['method']} ({m['finetune']})",
        "gap": _gap(s),
        "summary": {k: pct(s.get(k)) for k in ("source_accuracy", "source_macro_f1", "target_accuracy", "target_macro_f1")},
        "splits": _splits(report["splits"]),
        "labels": report["labels"],
        "confusions": _confusions(report["splits"], report["labels"]),
        "training": _training(report.get("training", {})),
        "loss": _loss(log),
        "method": _method(report),
        "diagnostics": _diagnostics(diagnostics) if diagnostics else None,
        "alarms": report.get("alarms") or [],
        "label_free": _label_free(report.get("label_free")),
        "label_free_on": [(name, {**shown, "source": lf.get("source")})
                          for name, lf in (report.get("label_free_on") or {}).items() if (shown := _label_free(lf))],
        "model": {
            "name_or_path": m["name_or_path"], "resolved_path": m["resolved_path"], "finetune": m["finetune"],
            "attention": m.get("attention"),  # absent in reports written before it was recorded
            "params_trainable": f"{m['params_trainable']:,}", "params_total": f"{m['params_total']:,}",
            "trainable_percent": f"{100 * m['params_trainable'] / max(1, m['params_total']):.2f}",
            "start": start_text(m),  # `model.init_from`'s chain of runs, `model.num_layers` kept
            "peft": _peft_text(m.get("peft")),
        },
        "timing": {
            "train_seconds": f"{t['train_seconds']:.1f}", "train_samples_per_second": f"{t['train_samples_per_second']:.1f}",
            "train_tokens_per_second": f"{t.get('train_tokens_per_second', 0):,.0f}",
            "padding_percent": pct(t.get("train_padding_fraction", 0)),
            "eval_samples_per_second": f"{t['eval_samples_per_second']:.1f}",
        },
        "environment": {
            "num_processes": env["num_processes"], "device": env["device"], "threads": env["threads"],
            "mixed_precision": env["mixed_precision"], "mixed_precision_source": env.get("mixed_precision_source", ""),
            "git_commit": env["git_commit"], "git_commit_short": env["git_commit"][:12],
            "versions": list(env["versions"].items()),
        },
    }


def _gap(s: dict) -> dict | None:
    """The lead sentence's numbers: the source-to-target gap read as a change, so a target that scores higher is
    a gain, not a negative loss."""
    if "transfer_gap" not in s:
        return None
    gap = s["transfer_gap"]
    return {"source": pct(s["source_accuracy"]), "target": pct(s["target_accuracy"]), "loses": gap >= 0,
            "points": pct(abs(gap))}


def _splits(splits: dict) -> list[dict]:
    rows = []
    for name in split_order(splits):
        s = splits[name]
        ci = s.get("ci95", {})
        rows.append({"name": name, "role": s["role"], "domain": s["domain"], "n": s["n"],
                     "accuracy": pct_interval(s["accuracy"], ci.get("accuracy")),
                     "macro_f1": pct_interval(s["macro_f1"], ci.get("macro_f1")),
                     "ece": f"{s['calibration']['ece']:.3f}" if "calibration" in s else "–", "note": s.get("note", "")})
    return rows


def _confusions(splits: dict, labels: list[str]) -> list[dict]:
    return [{"name": name, "per_class_f1": [(k, pct(v)) for k, v in s["per_class_f1"].items()],
             "rows": [(labels[i], row) for i, row in enumerate(s["confusion"])]}
            for name, s in splits.items() if s.get("kind") == "test"]


def _training(tr: dict) -> dict | None:
    if not tr:
        return None
    sel = tr.get("selection", {})
    return {"optimizer_steps": tr.get("optimizer_steps", "?"), "epochs_run": tr.get("epochs_run", "?"),
            "effective_batch_size": tr.get("effective_batch_size", "?"), "selection_split": sel.get("split", "–"),
            "selection_metric": sel.get("metric", "–"),
            # A label-free criterion is no percentage (entropy is in nats, DEV a loss).
            "best_value": _g(sel["best_value"]) if sel.get("label_free") and sel.get("best_value") is not None
            else pct(sel.get("best_value")),
            "best_step": sel.get("best_step", "–"), "stopped_early": bool(tr.get("stopped_early")),
            "selected_on_target": sel.get("split", "").startswith("target") and not sel.get("label_free")}


def _loss(log: list[dict]) -> dict | None:
    losses = [r for r in log if "loss" in r]
    if not losses:
        return None
    first, last = losses[0], losses[-1]
    return {"first": f"{first['loss']:.4f}", "first_step": first["global_step"], "last": f"{last['loss']:.4f}",
            "last_step": last["global_step"]}


def _g(v: float) -> str:
    return f"{v:.4g}"


def _method(report: dict) -> dict | None:
    """The method's own record: per phase, every logged quantity from its first to its last logged value, then
    the lines the method's registry entry writes about its summary."""
    ms = report.get("method_summary") or {}
    phases = ms.get("phases", [])
    if not phases:
        return None
    rows = []
    for p in phases:
        logged = [(k, _g(p["first"][k]), _g(v)) for k, v in p.get("last", {}).items() if k != "lr"]
        best = next((f"{k[5:]} {pct(v)}" for k, v in p.items() if k.startswith("best_") and k.endswith("macro_f1")), "–")
        rows.append({"name": p.get("name", p["phase"]), "last_step": p.get("last_step", "–"), "logged": logged,
                     "best": best})
    spec = method_spec(report["method"]) if report["method"] in available_methods() else None
    return {"name": report["method"], "phases": rows,
            "report_lines": spec.report_lines(ms) if spec and spec.report_lines else [],
            "l2sp": ms.get("l2sp")}


# What each label-free criterion measures, in the report's table; which way is better comes from its registry entry.
_CRITERIA_HELP = {
    "entropy": "mean prediction entropy (confidence)",
    "im": "information maximisation: confident and using every class",
    "class_balance": "KL of the predicted class shares from the source prior",
    "snd": "soft neighbourhood density of the target predictions",
    "dev": "deep embedded validation: source dev loss weighted towards the target",
    "atc": "estimated target accuracy: target share above a confidence threshold set on source dev",
    "domain_balance": "distance of the discriminator's domain accuracy from 0.5 (last quarter)",
}


def _label_free(lf: dict | None) -> dict | None:
    """The final model's label-free criteria on the unlabelled target sample, and the class shares it predicts."""
    if not lf or not lf.get("criteria"):
        return None
    rows = [(k, _g(v), ("higher" if CRITERIA[k].higher_is_better else "lower") if k in CRITERIA else "–",
             _CRITERIA_HELP.get(k, "")) for k, v in lf["criteria"].items()]
    shares = [(k, pct(v), pct(lf.get("source_prior", {}).get(k))) for k, v in lf.get("predicted_distribution", {}).items()]
    return {"examples": lf.get("examples", "?"), "rows": rows, "shares": shares}


def _diagnostics(d: dict) -> dict:
    """The domain-shift diagnostics; `_diagnostics.md.j2` adds a sentence on how to read each."""
    pad, vocab = d.get("proxy_a_distance", {}), d.get("vocabulary")
    return {
        "pad": {"source_split": d["source_split"], "target_split": d["target_split"],
                "examples_per_domain": d["examples_per_domain"],
                "encoders": [(k, f"{v['pad']:.2f}", pct(v["error"])) for k, v in pad.items()]} if pad else None,
        "vocabulary": {"source": vocab["source"], "target": vocab["target"], "jaccard": f"{vocab['jaccard']:.3f}",
                       "coverage": pct(vocab["target_token_coverage"])} if vocab else None,
    }


def _peft_text(peft: dict | None) -> str:
    """`model.finetune: peft`'s type and settings, one line (`dora`: r 8, alpha 16.0, ...; adapter 2,176 + head 66)."""
    if not peft:
        return ""
    settings = ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in peft.items()
                         if k not in ("type", "trainable_parameters") and v is not None)
    counts = peft.get("trainable_parameters", {})
    trained = f"; trainable: adapter {counts['adapter']:,} + head {counts['head']:,}" if counts else ""
    return f"`{peft['type']}` ({settings}){trained}"
