#!/usr/bin/env python3
"""Inference throughput and accuracy of a trained run, side by side in one process: PyTorch fp32 (the run's own
model), PyTorch int8 (`adapt export --int8`), ONNX Runtime fp32 and int8 (`adapt export --onnx [--int8]`).

    python benchmarks/inference.py RUN_DIR --data LABELLED.jsonl [--domain kitchen] [--compare NAME=DIR] [--batch-size 64] [--threads 1]

Exports RUN_DIR into a temporary folder for each exported engine and loads each as `adapt predict` does. The texts
are tokenised once, as `adapt predict` tokenises them (`adapt.serving.inference.text_batches`: the run's
max_length/truncation, length-sorted batches; every engine has the same settings), and that time is printed
apart. Every engine runs on `--threads` threads (torch and onnxruntime alike). After one warm-up pass each (whose
predictions give the accuracy), `--rounds` timed passes follow in which the engines take turns **batch by
batch**, in an order that rotates: a background load that comes and goes then slows every engine alike, which
whole passes in turn did not ensure on a shared CPU. Prints texts/s (model time only), the ratio to PyTorch
fp32, accuracy against the labels, the change in points and how often each agrees with PyTorch fp32, and the
CPU's SIMD flags. `--engines torch-int8,onnx-int8` runs a subset (PyTorch fp32 always runs: it is the baseline).
`--compare NAME=DIR` (repeatable) adds another run's (or model folder's) own model on the same batches, e.g. a
distilled student beside its teacher (`RUN_DIR` = the teacher); it must tokenise as RUN_DIR does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# engine -> adapt.export options; None is the run itself.
ENGINES = {"torch-fp32": None, "torch-int8": {"int8": True}, "onnx-fp32": {"onnx": True},
           "onnx-int8": {"onnx": True, "int8": True}}
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data", type=Path, required=True, help="jsonl with text and label (a label name)")
    p.add_argument("--domain", help="keep rows of this domain only")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="timed passes per engine, taken in turns (median kept)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {list(ENGINES)}")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                   help="another run or model folder measured beside RUN_DIR's engines (same tokenisation)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args()


def load_engines(run_dir: Path, names: list[str], tmp: Path) -> dict:
    from adapt.serving.export import export
    from adapt.serving.inference import load_for_inference

    loaded = {}
    for name in names:
        options = ENGINES[name]
        path = run_dir if options is None else tmp / name
        if options is not None:
            export(run_dir, path, **options)
        loaded[name] = load_for_inference(path)
    return loaded


def prepare_batches(loaded: dict, texts: list[str], batch_size: int) -> tuple[list[tuple], float]:
    """The collated model inputs (with each row's index), and the seconds tokenising took."""
    from adapt.data.features import classifier_inputs
    from adapt.serving.inference import text_batches

    settings = {(m.data_cfg.max_length, m.data_cfg.truncation, m.data_cfg.normalize) for m in loaded.values()}
    assert len(settings) == 1, f"the engines tokenise differently: {settings}"
    vocab = loaded["torch-fp32"].tokenizer.get_vocab()
    assert all(m.tokenizer.get_vocab() == vocab for m in loaded.values()), "the models use different tokenizers"
    ((max_length, truncation, normalize),) = settings
    tokenizer = loaded["torch-fp32"].tokenizer  # the exports carry the run's tokenizer
    start = time.perf_counter()
    loader = text_batches(tokenizer, texts, max_length, truncation, batch_size, normalize)
    batches = [(batch["idx"].numpy(), classifier_inputs(batch)) for batch in loader]
    return batches, time.perf_counter() - start


def measure(loaded: dict, batches: list[tuple], labels: np.ndarray, rounds: int) -> dict:
    from adapt.serving.inference import logits_function

    fns = {name: logits_function(m.model) for name, m in loaded.items()}
    names, n = list(fns), len(labels)
    preds, seconds = {name: np.empty(n, dtype=int) for name in names}, dict.fromkeys(names, 0.0)
    with torch.inference_mode():
        for name, fn in fns.items():  # warm-up, and the predictions (every pass gives the same)
            for idx, inputs in batches:
                preds[name][idx] = fn(inputs).argmax(-1).numpy()
        for r in range(rounds):
            for i, (_, inputs) in enumerate(batches):
                k = (i + r) % len(names)
                for name in names[k:] + names[:k]:  # each engine first, second, ... as often as the others
                    start = time.perf_counter()
                    fns[name](inputs)
                    seconds[name] += time.perf_counter() - start
    base = preds["torch-fp32"]
    return {name: {"texts_per_second": rounds * n / seconds[name], "seconds_per_pass": seconds[name] / rounds,
                   "accuracy": float((preds[name] == labels).mean()),
                   "agreement_with_torch_fp32": float((preds[name] == base).mean())} for name in names}


def cpu_flags() -> list[str]:
    from adapt.serving.onnx import cpu_flags as flags

    return [f for f in SIMD_FLAGS if f in flags()]


def print_table(results: dict, n: int, tokenise_s: float, args: argparse.Namespace) -> None:
    base = results["torch-fp32"]
    print(f"{n} texts, batch {args.batch_size}, {args.threads} thread(s) per engine, {args.rounds} timed passes "
          f"taken batch by batch in turns; tokenising (shared, not counted below) {tokenise_s:.2f} s; "
          f"CPU flags: {' '.join(cpu_flags())}")
    print("| engine | texts/s | vs PyTorch fp32 | accuracy | change (points) | same label as fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['texts_per_second']:.1f} | {r['texts_per_second'] / base['texts_per_second']:.2f}x "
              f"| {100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - base['accuracy']):+.2f} "
              f"| {100 * r['agreement_with_torch_fp32']:.1f}% |")


def main() -> int:
    args = parse_args()
    from adapt.core.cli import quiet_libraries

    quiet_libraries()  # no per-pass progress bars between the results
    names = ["torch-fp32", *(n for n in args.engines.split(",") if n and n != "torch-fp32")]
    unknown = set(names) - set(ENGINES)
    if unknown:
        sys.exit(f"--engines: unknown {sorted(unknown)}; choose from {list(ENGINES)}")
    torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's thread count (adapt.serving.onnx)
    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    rows = [r for r in rows if args.domain in (None, r.get("domain"))]
    texts = [r["text"] for r in rows]
    loaded = load_engines(args.run_dir, names, Path(tempfile.mkdtemp()))
    from adapt.serving.inference import load_for_inference

    for item in args.compare:
        name, _, folder = item.partition("=")
        loaded[name] = load_for_inference(Path(folder))
    label_names = loaded["torch-fp32"].label_names
    # A label name, or its index (the Amazon carve's labels are 0/1).
    labels = np.array([label_names.index(str(r["label"])) if str(r["label"]) in label_names else int(r["label"])
                       for r in rows])
    batches, tokenise_s = prepare_batches(loaded, texts, args.batch_size)
    results = measure(loaded, batches, labels, args.rounds)
    print_table(results, len(texts), tokenise_s, args)
    if args.json:
        record = {"run_dir": str(args.run_dir), "compare": args.compare,
                  "texts": len(texts), "batch_size": args.batch_size, "threads": args.threads, "rounds": args.rounds,
                  "tokenise_seconds": tokenise_s, "cpu_flags": cpu_flags(), "results": results}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
