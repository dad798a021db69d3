"""Export a trained run as a self-contained model folder for inference.

    adapt export RUN_DIR --out DIR [--int8]
    adapt export RUN_DIR --out DIR --onnx [--int8]        # an ONNX Runtime graph, for CPU serving
    python -m adapt.export RUN_DIR --out DIR [--int8]     # the same

The folder holds config.json (with id2label), the weights and the tokenizer, plus `adapt_export.json`: the
source run, whether it is int8, the parameter count, the file sizes and the tokenisation settings
(`data.max_length`, `data.truncation`) that `adapt.predict` applies. A LoRA run is merged into its base model
first (`merge_and_unload`), so an fp32 export is a plain transformers model that
`AutoModelForSequenceClassification.from_pretrained(DIR)` loads. The folder is built in a temporary directory
beside DIR and renamed into place when complete; a non-empty DIR is never overwritten.

`--int8`: 8-bit weights for CPU inference. The encoder's Linear layers are quantised dynamically (int8 weights
with a scale per output channel; activations quantised on the fly per batch, so the matmuls run in int8), and
the word-embedding table is stored as 8-bit rows with a float scale and offset each (the largest tensor of a
small encoder: 45 of all-MiniLM-L6-v2's 87 MiB). The classifier head stays fp32: it is tiny, and its outputs
are the probabilities. all-MiniLM-L6-v2 (with a fresh 2-label head) goes from 86.7 to 23.0 MiB and predicts
~1.4x faster on one thread of this 2-core CPU (54 vs 39 texts/s on 400 built-in reviews), its probabilities
within 0.006 of fp32. Which implementation, and why:

- `torch.ao.quantization.quantize_dynamic` (used here). It is deprecated in favour of torchao, and torch 2.13
  warns about it (the warnings are filtered while quantising and loading), but it still runs on the fbgemm/x86
  (and qnnpack/ARM) kernels that make int8 Linear layers faster than fp32 on a CPU, and needs no extra package.
- torchao 0.18 (installs from PyPI here): its `quantize_` with `Int8DynamicActivationInt8WeightConfig` ran an
  MLP of MiniLM's shape ~20x *slower* than fp32 on this 2-core CPU in eager mode (48 s vs 2.3 s; torch.ao:
  1.3 s), and `Int8WeightOnlyConfig` was slower than fp32 too (3.0 s); its wheel also prints errors at import
  about compiled extensions it cannot load. Not worth a dependency today; revisit when torch.ao's quantised
  modules are removed (`quantize_int8` then fails with an AttributeError naming them).

An int8 folder is not loadable by `from_pretrained` (transformers has no format for these modules); it holds
`model_int8.pt`, the `state_dict` of the quantised model (`torch.save`, loaded with `weights_only=True`).
`adapt_export.json` names each quantised module and its qconfig, so `load_int8` rebuilds the architecture from
config.json, quantises the same modules and loads that state: that is how `adapt.predict` reads it.

`--onnx` (needs `pip install 'adapt[onnx]'`: onnx and onnxruntime): model.onnx, config.json and the tokenizer,
optimum's layout, so `optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained(DIR)` loads it where
optimum installs (optimum-onnx 0.1.0 does not yet import under transformers 5); `adapt.predict` serves it through
onnxruntime with the run's tokenisation. The graph is `torch.onnx.export`ed (opset 17), then onnxruntime's
transformer optimizer fuses embeddings + LayerNorm, attention, bias + GELU and residual + LayerNorm into single
ops. With `--int8` its MatMuls are quantised dynamically by onnxruntime (int8 weights per output channel, uint8
activations per batch; signed weights on a CPU with VNNI, unsigned on plain AVX2, as optimum's
`AutoQuantizationConfig.avx512_vnni` / `.avx2` choose; `adapt_export.json` records which: export on the kind of
CPU that will serve). On this project's 2-core AMD EPYC (AVX512-VNNI), ONNX int8 predicts the default recipe's
model 2.4x as fast as PyTorch fp32 on one thread at -0.5 points: docs/performance.md has the table. A LoRA run
is merged first; a prompt-type adapter cannot be merged and is served by the torch path (`adapt predict RUN_DIR`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser, quiet_libraries


def make_parser(prog: str = "python -m adapt.export") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory or a model folder")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new (or empty) directory")
    p.add_argument("--int8", action="store_true", help="8-bit weights: int8 Linear layers (dynamic quantisation) and embeddings, for CPU")
    p.add_argument("--onnx", action="store_true",
                   help="an ONNX Runtime graph (model.onnx, fused); with --int8, its MatMuls quantised by onnxruntime")
    return p


ADAPTER_NAMES = {"lora": "LoRA", "dora": "DoRA", "ia3": "IA3", "adalora": "AdaLoRA"}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    from adapt.serving.export import export

    info = export(args.run_dir, args.out, args.int8, args.onnx)
    kind = ("ONNX " if info["onnx"] else "") + ("int8" if info["int8"] else "fp32")
    kind += f", {ADAPTER_NAMES.get(info['adapter_merged'], info['adapter_merged'])} merged" if info["adapter_merged"] else ""
    print(f"exported {info['source']} to {args.out} ({kind}): {info['parameters']:,} parameters, "
          f"weights {info['weights_bytes'] / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
