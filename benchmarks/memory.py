#!/usr/bin/env python3
"""Training-state memory of LoRA against full fine-tuning (the embedded all-MiniLM-L6-v2).

    python benchmarks/memory.py [--steps 3] [--max-length 256] [--batch 16]

For each mode, in a fresh subprocess: build the classifier as `adapt` does (`adapt.model`), train a few AdamW
steps on random tokens, then count the training state — parameters + gradients + optimizer state, in bytes —
and the process's peak RSS. Prints both and the LoRA / full ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, torch
from adapt.model.finetune import apply_finetune
from adapt.model.loading import load_classifier, resolve_model
from adapt.training.optim import build_optimizer
from adapt.recipe import load_recipe
mode, steps, length, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
recipe = load_recipe(None, ["data.source.train=x", "data.source.test=x", "data.target.test=x", f"model.finetune={mode}"])
model, _ = apply_finetune(load_classifier(resolve_model(recipe.model.name_or_path), ["negative", "positive"]), recipe.model)
opt = build_optimizer(model, recipe.train)
x = torch.randint(1000, 20000, (batch, length)); y = torch.randint(0, 2, (batch,))
for _ in range(steps):
    torch.nn.functional.cross_entropy(model(input_ids=x).logits, y).backward()
    opt.step(); opt.zero_grad(set_to_none=False)  # keep the gradient buffers, as during training
nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)
params = nbytes(model.parameters())
grads = nbytes(p.grad for p in model.parameters() if p.grad is not None)
state = nbytes(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
print(json.dumps({"mode": mode, "params_bytes": params, "grad_bytes": grads, "optimizer_bytes": state,
                  "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    rows = {}
    for mode in ("full", "lora"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.steps), str(args.max_length), str(args.batch)],
                             capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1", **__import__("os").environ})
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        rows[mode]["state_bytes"] = rows[mode]["params_bytes"] + rows[mode]["grad_bytes"] + rows[mode]["optimizer_bytes"]
    print("| mode | trainable params | params | grads | optimizer state | training state | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
        print(f"| {mode} | {r['trainable']:,} | {mib(r['params_bytes'])} | {mib(r['grad_bytes'])} | "
              f"{mib(r['optimizer_bytes'])} | {mib(r['state_bytes'])} | {r['peak_rss_gib']:.2f} GiB |")
    full, lora = rows["full"], rows["lora"]
    print(f"\nLoRA / full: training state {lora['state_bytes'] / full['state_bytes']:.3f}, "
          f"peak RSS {lora['peak_rss_gib'] / full['peak_rss_gib']:.3f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
