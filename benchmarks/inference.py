#!/usr/bin/env python3
"""Inference throughput and accuracy of a trained run: fp32 against the `adapt.export --int8` model.

    python benchmarks/inference.py RUN_DIR --data LABELLED.jsonl [--domain kitchen] [--batch-size 64]

Exports RUN_DIR with `--int8` into a temporary folder, then predicts every text of the labelled file with the
run's own model (fp32) and with the int8 export, in this process, after one warm-up pass each; prints texts/s,
accuracy against the labels, the speed-up, the accuracy change and how often the two agree.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data", type=Path, required=True, help="jsonl with text and label (a label name)")
    p.add_argument("--domain", help="keep rows of this domain only")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    from adapt.serving.export import export
    from adapt.serving.inference import load_for_inference, predict_texts

    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    rows = [r for r in rows if args.domain in (None, r.get("domain"))]
    texts = [r["text"] for r in rows]
    out = Path(tempfile.mkdtemp()) / "int8"
    export(args.run_dir, out, int8=True)
    results = {}
    for name, path in (("fp32", args.run_dir), ("int8", out)):
        m = load_for_inference(path)
        labels = np.array([m.label_names.index(str(r["label"])) for r in rows])
        settings = (m.data_cfg.max_length, m.data_cfg.truncation, args.batch_size)
        predict_texts(m.model, m.tokenizer, texts, *settings)  # warm-up
        start = time.perf_counter()
        probs = predict_texts(m.model, m.tokenizer, texts, *settings)
        seconds = time.perf_counter() - start
        results[name] = {"texts_per_second": len(texts) / seconds, "accuracy": float((probs.argmax(1) == labels).mean()),
                         "pred": probs.argmax(1)}
    f, q = results["fp32"], results["int8"]
    print(f"{len(texts)} texts, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print("| model | texts/s | accuracy |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['texts_per_second']:.1f} | {100 * r['accuracy']:.2f} |")
    print(f"int8 / fp32 speed-up {q['texts_per_second'] / f['texts_per_second']:.2f}x; accuracy change "
          f"{100 * (q['accuracy'] - f['accuracy']):+.2f} points; same label on {100 * (q['pred'] == f['pred']).mean():.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
