"""Inference on a saved classifier: find and load a model folder, then predict class probabilities for texts.

Shared by `adapt.predict` and `adapt.export`. A *model folder* is a run's `model/` (a full model or a LoRA
adapter + head), a folder written by `adapt.export` (a plain transformers model, an int8 model described
by its `adapt_export.json`, or an ONNX graph served by onnxruntime), or a folder pushed by `adapt.hub` (or
written by its `--dry-run`), which carries its run's `recipe.yaml`. A Hub model id (`user/name`) is downloaded
to the Hugging Face cache first. The tokenisation settings (`data.max_length`, `data.truncation`) come from the
run's `recipe.yaml`, or from `adapt_export.json` for an export, so predictions match what the run itself computed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from adapt.core.errors import AdaptError
from adapt.core.rundir import RunDir
from adapt.data.features import Collator, classifier_inputs, eval_loader, tokenize
from adapt.data.splits import NORMALIZERS
from adapt.hub.ids import is_hub_model_id
from adapt.hub.reachability import hub_reachable
from adapt.model.saving import load_saved_model
from adapt.recipe import DataConfig, load_recipe
from adapt.serving.int8 import load_int8
from adapt.serving.onnx import ONNX_FILE, OnnxClassifier

EXPORT_INFO = "adapt_export.json"  # written by adapt.export; marks an exported folder
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_config.json",
                ONNX_FILE)


class InferenceModel(NamedTuple):
    model: torch.nn.Module | OnnxClassifier
    tokenizer: PreTrainedTokenizerBase
    label_names: list[str]
    data_cfg: DataConfig  # only `max_length`, `truncation` and `normalize` matter for inference


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (
        any((path / f).is_file() for f in WEIGHT_FILES) or (path / EXPORT_INFO).is_file()
    )


@functools.lru_cache(maxsize=8)  # `adapt.predict` resolves its argument twice: download (or check) once
def download_model(repo_id: str) -> Path:
    """A Hub model repository's files in the Hugging Face cache. Offline only a cached copy is used, so a missing
    one fails at once rather than after the client's retries."""
    from huggingface_hub import snapshot_download

    online = hub_reachable()
    try:
        return Path(snapshot_download(repo_id, local_files_only=not online))
    except Exception as err:  # HTTP, network and cache errors alike: the model is not available
        if not online:
            raise AdaptError(
                f"{repo_id} is not a local directory, and the Hub model {repo_id!r} cannot be downloaded: the Hugging "
                "Face Hub is unreachable (offline or HF_HUB_OFFLINE=1) and it is not in the local Hugging Face cache. "
                "Give a run directory or model folder, or run where the Hub is reachable."
            ) from None
        raise AdaptError(f"cannot download the Hub model {repo_id!r} ({type(err).__name__}: {err}); check the id (a "
                         "private repository needs HF_TOKEN or `hf auth login`)") from None


def resolve_model_dir(path: Path) -> tuple[Path, RunDir | None]:
    """The model folder to load for `path` (a run directory, a model folder or a Hub model id), and the run
    whose recipe holds its tokenisation settings."""
    path = Path(path)
    if not path.exists() and is_hub_model_id(str(path)):
        path = download_model(str(path))
    if not path.exists():
        raise AdaptError(f"{path} does not exist; give a run directory, a model folder or a Hub model id (user/name)")
    if not path.is_dir():
        raise AdaptError(f"{path} is not a directory; give a run directory or a model folder")
    if is_model_folder(path):
        if RunDir(path).recipe.is_file():  # a pushed folder carries its run's recipe.yaml
            return path, RunDir(path)
        # A run's own `model/` still uses its run's recipe for the tokenisation settings.
        parent = RunDir(path.parent)
        return path, parent if path.name == "model" and parent.recipe.is_file() else None
    run = RunDir(path)
    if run.recipe.is_file() and not is_model_folder(run.model):
        raise AdaptError(f"{path} is a run directory without a saved model (no model/ with config.json and weights); "
                         "did the run finish?")
    if not is_model_folder(run.model):
        raise AdaptError(f"{path} holds no model: expected a run directory (recipe.yaml + model/) or a model folder "
                         "(config.json + weights, or an adapt.export folder)")
    return run.model, run


def read_export_info(model_dir: Path) -> dict | None:
    path = model_dir / EXPORT_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def data_settings(model_dir: Path, run: RunDir | None) -> DataConfig:
    """`max_length` / `truncation` / `normalize` as the model was trained with; the schema defaults for a bare model folder."""
    if run is not None:
        return load_recipe(run.recipe).data
    info = read_export_info(model_dir)
    if info is not None and "data" in info:
        return DataConfig(**info["data"])
    return DataConfig()


def label_names(model_dir: Path) -> list[str]:
    # config.json sits beside LoRA adapters too (adapt.model.saving.save_model writes it), so this covers every kind.
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def load_model(model_dir: Path) -> torch.nn.Module | OnnxClassifier:
    """A full model, a LoRA adapter on its base (peft-wrapped), or an int8 export, in eval mode; an ONNX folder
    (ours or optimum's: a model.onnx) as an onnxruntime session."""
    info = read_export_info(model_dir)
    if (model_dir / ONNX_FILE).is_file():
        return OnnxClassifier(model_dir / ONNX_FILE)
    if info is not None and info.get("int8"):
        return load_int8(model_dir, info).eval()
    return load_saved_model(model_dir).eval()


def load_for_inference(path: Path) -> InferenceModel:
    """Everything needed to predict with a run directory or model folder."""
    model_dir, run = resolve_model_dir(path)
    return InferenceModel(load_model(model_dir), AutoTokenizer.from_pretrained(str(model_dir)),
                          label_names(model_dir), data_settings(model_dir, run))


def logits_function(model: torch.nn.Module | OnnxClassifier) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Logits from a collated batch's model inputs, for either engine."""
    if isinstance(model, OnnxClassifier):
        return lambda inputs: torch.from_numpy(model.logits(inputs))
    device = next(model.parameters()).device
    model.eval()
    return lambda inputs: model(**{k: v.to(device) for k, v in inputs.items()}).logits


def text_batches(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, truncation: str,
                 batch_size: int, normalize: str = "none") -> DataLoader:
    """`texts` tokenised exactly as in training and evaluation (`adapt.data.features`), in batches sorted by length
    so little compute goes into padding; each row's position in `texts` travels with it as `idx`."""
    cfg = DataConfig(max_length=max_length, truncation=truncation, normalize=normalize)
    norm = NORMALIZERS[normalize]  # the text rewriting the model was trained with, if any
    ds = Dataset.from_dict({"text": [norm(t) for t in texts] if norm else list(texts), "idx": list(range(len(texts)))})
    return eval_loader(tokenize(ds, tokenizer, cfg, "predict"), batch_size, Collator(tokenizer.pad_token_id))


def predict_texts(model: torch.nn.Module | OnnxClassifier, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                  max_length: int, truncation: str, batch_size: int, normalize: str = "none") -> np.ndarray:
    """Class probabilities, shape (len(texts), labels), in the order of `texts` (batched by `text_batches`)."""
    loader = text_batches(tokenizer, texts, max_length, truncation, batch_size, normalize)
    logits_of = logits_function(model)
    out: np.ndarray | None = None
    with torch.inference_mode():
        for batch in loader:
            probs = torch.softmax(logits_of(classifier_inputs(batch)).float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(texts), probs.shape[1]), dtype=np.float32)
            out[batch["idx"].numpy()] = probs
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
