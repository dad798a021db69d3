"""Export a trained run as a self-contained model folder for inference.

    python -m adapt.export RUN_DIR --out DIR [--int8]

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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import adapt
from adapt.errors import AdaptError, cli_entry, quiet_libraries
from adapt.inference import EXPORT_INFO, data_settings, load_model, read_export_info, resolve_model_dir
from adapt.modeling import head_parameter_modules

INT8_WEIGHTS = "model_int8.pt"
INT8_FORMAT = "torch.ao.quantization.quantize_dynamic"
# Module type -> the `torch.ao.quantization` qconfig applied to it. adapt_export.json records the qconfig name of
# every quantised module, and loading accepts only these names.
INT8_QCONFIGS = {torch.nn.Linear: "per_channel_dynamic_qconfig", torch.nn.Embedding: "float_qparams_weight_only_qconfig"}


# ----------------------------------------------------------------------------------------------------------
# int8: quantising, and rebuilding a quantised model from its folder.


@contextmanager
def _quiet_quantization() -> Iterator[None]:
    """Hide torch's deprecation warnings for torch.ao's quantisation (see the module docstring for why we use
    it anyway): the API's own, the quantised-tensor constructors', and `torch.load`'s rebuilding of quantised
    tensors, which still goes through TypedStorage. Only these messages are filtered; any other still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated", category=UserWarning)
        yield


def int8_plan(model: torch.nn.Module) -> dict[str, str]:
    """Module name -> qconfig name: every Linear outside the classifier head, and the word embeddings.

    Only the word embeddings among the embedding tables: the position and token-type tables are small, and BERT
    looks them up with expanded (non-contiguous) index tensors, which the 8-bit embedding kernel rejects.
    """
    head = set(head_parameter_modules(model))
    words = model.get_input_embeddings()
    plan = {}
    for name, module in model.named_modules():
        if name.split(".", 1)[0] in head:
            continue
        if type(module) is torch.nn.Linear or (module is words and type(module) is torch.nn.Embedding):
            plan[name] = INT8_QCONFIGS[type(module)]
    return plan


def quantize_int8(model: torch.nn.Module, plan: dict[str, str]) -> torch.nn.Module:
    """A copy of `model` with the modules of `plan` replaced by their 8-bit versions."""
    unknown = set(plan.values()) - set(INT8_QCONFIGS.values())
    if unknown:
        raise AdaptError(f"unknown int8 qconfig(s) {sorted(unknown)}; re-export with this version of adapt")
    spec = {name: getattr(torch.ao.quantization, qconfig) for name, qconfig in plan.items()}
    with _quiet_quantization():
        return torch.ao.quantization.quantize_dynamic(model, spec)


def load_int8(model_dir: Path, info: dict) -> torch.nn.Module:
    """Rebuild an int8 export: the architecture from config.json, the same modules quantised, then the saved
    state (`load_state_dict` is strict, so a mismatch between plan and weights fails loudly)."""
    quant = info["quantization"]
    if quant.get("format") != INT8_FORMAT:
        raise AdaptError(f"{model_dir}/{EXPORT_INFO}: unknown int8 format {quant.get('format')!r}; "
                         "re-export with this version of adapt")
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    model = quantize_int8(AutoModelForSequenceClassification.from_config(config), quant["modules"])
    with _quiet_quantization():
        state = torch.load(model_dir / info["weights"][0], map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------------------------------------
# Export.


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise AdaptError(f"--out {out} is a file; give a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        raise AdaptError(f"--out {out} exists and is not empty; choose a new directory (nothing was overwritten)")


def plain_model(model_dir: Path) -> tuple[torch.nn.Module, bool]:
    """The run's model as a plain transformers model; LoRA adapters merged into the base weights."""
    from peft import PeftModel

    model = load_model(model_dir)
    if isinstance(model, PeftModel):
        return model.merge_and_unload().eval(), True
    return model.eval(), False


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A directory beside `out`, renamed to `out` once the block succeeds, and removed if it fails."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a crashed export with the same pid
        tmp.mkdir()
    except OSError as err:
        raise AdaptError(f"cannot write --out {out}: {err.strerror or err}") from None
    try:
        yield tmp
        os.replace(tmp, out)  # POSIX replaces an empty directory atomically; a non-empty one fails (checked before)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AdaptError(f"cannot write --out {out}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_fp32(model: torch.nn.Module, out: Path) -> list[str]:
    model.save_pretrained(str(out))
    return sorted(p.name for p in out.iterdir() if p.name.startswith("model") and ".safetensors" in p.name)


def _save_int8(model: torch.nn.Module, out: Path) -> tuple[list[str], dict]:
    plan = int8_plan(model)
    model.config.save_pretrained(str(out))
    # Keep the quantised model alive while saving: the 8-bit embedding's state_dict entry is a view of the
    # module's packed buffer, and saving it after the module is freed writes garbage (torch 2.13).
    quantized = quantize_int8(model, plan)
    torch.save(quantized.state_dict(), out / INT8_WEIGHTS)
    quant = {"format": INT8_FORMAT, "modules": plan, "engine": torch.backends.quantized.engine}
    return [INT8_WEIGHTS], quant


def _bytes(folder: Path, names: list[str] | None = None) -> int:
    files = [folder / n for n in names] if names is not None else [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def export(source: Path, out: Path, int8: bool = False) -> dict:
    """Write the model of `source` (run directory or model folder) to `out`; returns its `adapt_export.json`."""
    check_out_dir(out)
    model_dir, run = resolve_model_dir(source)
    source_info = read_export_info(model_dir)
    if source_info is not None and source_info.get("int8"):
        raise AdaptError(f"{source} is already an int8 export; export from the run (or an fp32 export) instead")
    data = data_settings(model_dir, run)
    model, merged = plain_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    info = {
        "format_version": 1,
        "source": str(Path(run.root if run is not None else model_dir).resolve()),
        "source_model": str(model_dir.resolve()),
        "lora_merged": merged,
        "int8": int8,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"max_length": data.max_length, "truncation": data.truncation, "normalize": data.normalize},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"adapt": adapt.__version__, "torch": torch.__version__},
    }
    with staging_dir(out) as tmp:
        if int8:
            info["weights"], info["quantization"] = _save_int8(model, tmp)
        else:
            info["weights"] = _save_fp32(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        info["weights_bytes"] = _bytes(tmp, info["weights"])
        info["folder_bytes"] = _bytes(tmp)  # everything but adapt_export.json itself
        # A plain write: the whole folder appears atomically anyway, and this keeps the umask's permissions.
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adapt.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory or a model folder")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new (or empty) directory")
    p.add_argument("--int8", action="store_true", help="8-bit weights: int8 Linear layers (dynamic quantisation) and embeddings, for CPU")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    info = export(args.run_dir, args.out, args.int8)
    kind = ("int8" if info["int8"] else "fp32") + (", LoRA merged" if info["lora_merged"] else "")
    print(f"exported {info['source']} to {args.out} ({kind}): {info['parameters']:,} parameters, "
          f"weights {info['weights_bytes'] / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
