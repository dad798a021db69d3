"""The ONNX export format: writing a classifier as an ONNX Runtime graph (`save_onnx`), optionally int8, and
serving it (`OnnxClassifier`). Export writes it, inference reads it.

Why these tools, and not optimum's `ORTModelForSequenceClassification` / `ORTOptimizer` / `ORTQuantizer`: the
newest optimum-onnx (0.1.0) requires transformers < 4.58 and fails to import under transformers 5
(`cannot import name 'is_offline_mode' from 'transformers.utils'`), so the export uses what optimum itself calls
underneath: `torch.onnx.export`, onnxruntime's BERT graph optimizer and its dynamic quantiser. The folder keeps
optimum's layout (model.onnx with inputs `input_ids`/`attention_mask`/`token_type_ids` and output `logits`, plus
config.json and the tokenizer), so `ORTModelForSequenceClassification.from_pretrained(DIR)` loads it wherever
optimum installs.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapt.core.errors import AdaptError
from adapt.data.features import MODEL_INPUTS

ONNX_FILE = "model.onnx"
# torch's TorchScript exporter needs neither onnxscript nor onnx; the optimizer and quantiser need onnx.
ONNX_PACKAGES = ("onnx", "onnxruntime")
INSTALL_HINT = "pip install 'adapt[onnx]' (or: pip install onnx onnxruntime)"
OPSET = 17  # has LayerNormalization as one op; onnxruntime 1.18+ runs it
# CPU flags (from /proc/cpuinfo) whose int8 dot-product instructions make signed int8 weights fast.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def require_onnx() -> None:
    """Fail with the install command when the ONNX packages are missing, before anything is written."""
    import importlib.util

    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise AdaptError(f"ONNX export and serving need {', '.join(missing)}, which is not installed: {INSTALL_HINT}")


# ----------------------------------------------------------------------------------------------------------
# Export.


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume no VNNI, the choice that is safe everywhere
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def int8_settings(flags: set[str] | None = None) -> dict[str, Any]:
    """Dynamic-quantisation settings for this CPU, as optimum's `AutoQuantizationConfig` would pick them.

    With VNNI (or AMX) the CPU multiplies uint8 activations by int8 weights natively: signed weights
    (`avx512_vnni`). Without it, onnxruntime's AVX2 u8s8 kernel (vpmaddubsw) can saturate its 16-bit sums, so
    optimum's `avx2` config keeps weights unsigned (u8u8), which is exact.
    """
    flags = cpu_flags() if flags is None else flags
    vnni = sorted(flags & set(VNNI_FLAGS))
    isa = "avx512_vnni" if vnni else "avx2"
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "isa": isa, "cpu_flags": vnni,
            "weight_type": "QInt8" if vnni else "QUInt8", "activation_type": "QUInt8", "per_channel": True,
            "optimum_equivalent": f"AutoQuantizationConfig.{isa}(is_static=False, per_channel=True)"}


def input_names(model: torch.nn.Module) -> list[str]:
    """The tokenizer outputs this model's forward takes, in adapt's order (token_type_ids only where it exists)."""
    params = inspect.signature(model.forward).parameters
    return [name for name in MODEL_INPUTS if name in params]


def _torch_export(model: torch.nn.Module, path: Path) -> list[str]:
    names = input_names(model)
    dummy = {name: torch.ones((2, 8), dtype=torch.long) for name in names}
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in names} | {"logits": {0: "batch_size"}}
    # The TorchScript exporter (dynamo=False), not the dynamo one: its graph is the one onnxruntime's BERT optimizer
    # recognises and fuses. Eager attention for the same reason: SDPA traces into ops the fusion does not match.
    try:
        model.set_attn_implementation("eager")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings, one per layer
            torch.onnx.export(model, (), str(path), kwargs=dummy, input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except Exception as err:  # any tracing or conversion failure: this architecture has no ONNX export here
        raise AdaptError(f"torch.onnx.export cannot export this {model.config.model_type} model ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); serve it with the torch path instead: "
                         "adapt export RUN_DIR --out DIR [--int8] (without --onnx), or adapt predict RUN_DIR") from None
    return names


def _optimize(raw: Path, out: Path, config) -> dict[str, int]:
    """onnxruntime's transformer optimizer: fuses embeddings+LayerNorm, attention, bias+GELU and residual+LayerNorm
    into single contrib ops. Fusion level only (no hardware-specific rewrites), so the graph runs on any CPU."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, opt_level=0)
    opt.save_model_to_file(str(out))
    return {op: n for op, n in opt.get_fused_operator_statistics().items() if n}


def _quantize(src: Path, out: Path, settings: dict[str, Any]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: shape inference cannot type the outputs of the fused contrib ops, which the quantiser
    # needs for the MatMuls after them; they are all fp32.
    root = logging.getLogger()
    root.addFilter(_drop_preprocess_hint)
    try:
        quantize_dynamic(str(src), str(out), weight_type=getattr(QuantType, settings["weight_type"]),
                         per_channel=settings["per_channel"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.removeFilter(_drop_preprocess_hint)


def _drop_preprocess_hint(record: logging.LogRecord) -> bool:
    """The quantiser logs advice on every call to run its shape pre-processing first, which is for static
    quantisation of vision models; only that message is dropped."""
    return "pre-processing before quantization" not in record.getMessage()


def save_onnx(model: torch.nn.Module, out: Path, int8: bool) -> dict[str, Any]:
    """Write `model` (a plain transformers classifier, eval mode) to `out/model.onnx` with its config.json;
    returns what was done, for adapt_export.json."""
    require_onnx()
    import onnxruntime

    model.config.save_pretrained(str(out))  # before the export switches the attention implementation
    with tempfile.TemporaryDirectory(dir=out) as scratch:  # inside `out`: a failed export leaves nothing behind
        raw, fused = Path(scratch) / "raw.onnx", Path(scratch) / "fused.onnx"
        names = _torch_export(model, raw)
        fusions = _optimize(raw, fused, model.config)
        quant = int8_settings() if int8 else None
        if quant:
            _quantize(fused, out / ONNX_FILE, quant)
        else:
            fused.replace(out / ONNX_FILE)
    onnx_info = {"file": ONNX_FILE, "inputs": names, "opset": OPSET, "exporter": "torch.onnx.export (TorchScript)",
                 "optimizer": "onnxruntime.transformers.optimizer (bert, fusion only)", "fused_ops": fusions,
                 "onnxruntime": onnxruntime.__version__}
    return {"onnx": onnx_info, "quantization": quant}


# ----------------------------------------------------------------------------------------------------------
# Serving.


class OnnxClassifier:
    """An ONNX Runtime session that predicts logits from a collated batch, on as many threads as torch uses (so
    `torch.set_num_threads` governs both engines alike)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        require_onnx()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def logits(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        feed = {}
        for name in self.inputs:
            # A tokenizer without token types gives none; the graph of a BERT still takes them (all zero).
            value = batch[name] if name in batch else torch.zeros_like(batch["input_ids"])
            feed[name] = value.numpy().astype(np.int64, copy=False)
        return self.session.run(["logits"], feed)[0]
