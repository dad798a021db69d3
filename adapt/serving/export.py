"""Export a run as a self-contained model folder for inference: fp32 (a plain transformers model, LoRA merged),
int8, or an ONNX Runtime graph, fp32 or int8 (see `adapt export --help` for the formats and why these)."""

from __future__ import annotations

import json
import time
from importlib.metadata import version as package_version
from pathlib import Path

import torch
from transformers import AutoTokenizer

from adapt.core.errors import AdaptError
from adapt.core.fileio import staged_dir
from adapt.serving.inference import (
    EXPORT_INFO,
    data_settings,
    load_model,
    read_export_info,
    resolve_model_dir,
)
from adapt.serving.int8 import INT8_FORMAT, INT8_WEIGHTS, int8_plan, quantize_int8
from adapt.serving.onnx import ONNX_FILE, require_onnx, save_onnx


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise AdaptError(f"--out {out} is a file; give a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        raise AdaptError(f"--out {out} exists and is not empty; choose a new directory (nothing was overwritten)")


def plain_model(model_dir: Path) -> tuple[torch.nn.Module, str | None]:
    """The run's model as a plain transformers model, and the type of the adapter merged into its base weights
    (`lora`, `dora`, `ia3`, `adalora`; None without one). Prompt-type adapters cannot be merged: an error says so."""
    from peft import PeftModel

    model = load_model(model_dir)
    if isinstance(model, PeftModel):
        config = model.active_peft_config
        if config.is_prompt_learning:  # virtual tokens are extra inputs, not a change of weights
            raise AdaptError(
                f"{model_dir} holds a `{config.peft_type.value.lower()}` adapter, whose virtual tokens go before every "
                "input and cannot be merged into the weights, so it has no plain transformers export; serve the run "
                f"with `adapt predict {model_dir.parent if model_dir.name == 'model' else model_dir} ...` (the torch "
                "path loads the adapter on its base model), or train a lora, dora, ia3 or adalora adapter")
        kind = "dora" if getattr(config, "use_dora", False) else config.peft_type.value.lower()
        return model.merge_and_unload().eval(), kind
    return model.eval(), None


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


def _check_source(source: Path, model_dir: Path) -> None:
    info = read_export_info(model_dir)
    if (model_dir / ONNX_FILE).is_file():
        raise AdaptError(f"{source} is already an ONNX export; export from the run (or an fp32 export) instead")
    if info is not None and info.get("int8"):
        raise AdaptError(f"{source} is already an int8 export; export from the run (or an fp32 export) instead")


def export(source: Path, out: Path, int8: bool = False, onnx: bool = False) -> dict:
    """Write the model of `source` (run directory or model folder) to `out`; returns its `adapt_export.json`.
    `onnx`: an ONNX Runtime graph (`adapt.serving.onnx`), int8 with `int8`; otherwise a torch model folder."""
    check_out_dir(out)
    if onnx:
        require_onnx()  # before the model loads: a missing package is the first thing to hear about
    model_dir, run = resolve_model_dir(source)
    _check_source(source, model_dir)
    data = data_settings(model_dir, run)
    model, merged = plain_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    info = {
        "format_version": 1,
        "source": str(Path(run.root if run is not None else model_dir).resolve()),
        "source_model": str(model_dir.resolve()),
        "adapter_merged": merged,  # the adapter type merged into the weights, or None
        "lora_merged": merged is not None,  # format 1's name for "an adapter was merged", kept for its readers
        "int8": int8,
        "onnx": onnx,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"max_length": data.max_length, "truncation": data.truncation, "normalize": data.normalize},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"adapt": package_version("adapt"), "torch": torch.__version__},
    }
    with staged_dir(out, "--out") as tmp:
        if onnx:
            info |= save_onnx(model, tmp, int8)
            info["weights"] = [ONNX_FILE]
        elif int8:
            info["weights"], info["quantization"] = _save_int8(model, tmp)
        else:
            info["weights"] = _save_fp32(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        info["weights_bytes"] = _bytes(tmp, info["weights"])
        info["folder_bytes"] = _bytes(tmp)  # everything but adapt_export.json itself
        # A plain write: the whole folder appears atomically anyway, and this keeps the umask's permissions.
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info
