"""The int8 export format: which modules are quantised (`int8_plan`), quantising them (`quantize_int8`), and
rebuilding a quantised model from its folder (`load_int8`). Export writes it, inference reads it.

Why `torch.ao.quantization.quantize_dynamic`: it is deprecated in favour of torchao, and torch 2.13 warns about
it (the warnings are filtered while quantising and loading), but it still runs on the fbgemm/x86 (and
qnnpack/ARM) kernels that make int8 Linear layers faster than fp32 on a CPU, and needs no extra package. torchao
0.18 ran an MLP of MiniLM's shape ~20x slower than fp32 on this project's 2-core CPU in eager mode (see
`adapt export --help`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from adapt.core.errors import AdaptError
from adapt.model.finetune import head_parameter_modules

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
        raise AdaptError(f"{model_dir}/adapt_export.json: unknown int8 format {quant.get('format')!r}; "
                         "re-export with this version of adapt")
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    model = quantize_int8(AutoModelForSequenceClassification.from_config(config), quant["modules"])
    with _quiet_quantization():
        state = torch.load(model_dir / info["weights"][0], map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model
