"""The MLM methods' training side: masking, the MLM and UDALM losses, saving and reusing the MLM-adapted
encoder (`<run>/mlm/`), and the three methods (described in `adapt/methods/mlm/__init__.py`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset, concatenate_datasets
from safetensors.torch import load_file, save_file

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json
from adapt.methods.base import BaseMethod, LossOutput, MethodContext, Phase, StepInfo
from adapt.methods.main_process import on_main_process
from adapt.methods.mlm.head import HeadSpec, build_mlm_head, mask_tokens, rebuild_for
from adapt.methods.source_only.method import labeled_training_data, supervised_phase
from adapt.model.heads import AdaptModel, classifier_of, concat_batches
from adapt.recipe import Recipe, recipe_to_dict

TEXT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "length", "idx")


def text_only(parts: list[Dataset]) -> Dataset:
    """Token ids of several splits as one unlabelled dataset (labels and ids dropped: only the text is used)."""
    cols = [c for c in TEXT_COLUMNS if all(c in p.column_names for p in parts)]
    parts = [p.select_columns(cols) for p in parts]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


class Masker:
    """Masks a batch for MLM with the tokenizer's special and mask tokens (see `adapt.methods.mlm.head.mask_tokens`)."""

    def __init__(self, tokenizer, vocab_size: int, probability: float):
        if tokenizer.mask_token_id is None:
            raise AdaptError("the tokenizer has no mask token, so this model cannot be trained as a masked LM; "
                             "use a BERT-style encoder or a method without an MLM phase")
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.mask_id, self.vocab_size, self.probability = tokenizer.mask_token_id, vocab_size, probability

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        special = self.special.to(batch["input_ids"].device)
        return mask_tokens(batch["input_ids"], batch["attention_mask"], special, self.mask_id, self.vocab_size,
                           self.probability)


def mlm_cross_entropy(mlm_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    targets = labels[labels != -100]
    if targets.numel() == 0:  # nothing selected in this batch (tiny batches only): a zero that keeps the graph
        return mlm_logits.sum() * 0.0
    return F.cross_entropy(mlm_logits.float(), targets)


def make_mlm_loss(masker: Masker):
    def mlm_loss(model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
        batch = batches["text"]
        ids, labels = masker(batch)
        inputs = {k: v for k, v in batch.items() if k in ("attention_mask", "token_type_ids")}
        out = model(input_ids=ids, **inputs, heads={"mlm": labels}, classify=False)
        loss = mlm_cross_entropy(out.heads["mlm"], labels)
        masked = (labels != -100).sum() / batch["attention_mask"].sum()
        return LossOutput(loss, {"mlm": loss.detach(), "masked_fraction": masked.detach().float()})

    return mlm_loss


def make_udalm_loss(masker: Masker, weight: float, pad_id: int):
    def udalm_loss(model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
        labeled, text = batches["labeled"], batches["text"]
        ids, mlm_labels = masker(text)
        # One forward pass over both batches: the source rows unmasked (CE), the target rows masked (MLM).
        inputs = concat_batches(labeled, {**text, "input_ids": ids}, pad_id)
        n = labeled["input_ids"].shape[0]
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[n:, : mlm_labels.shape[1]] = mlm_labels
        out = model(**inputs, heads={"mlm": labels})
        ce = F.cross_entropy(out.logits[:n].float(), labeled["labels"])
        mlm = mlm_cross_entropy(out.heads["mlm"], labels)
        return LossOutput(ce + weight * mlm, {"ce": ce.detach(), "mlm": mlm.detach()})

    return udalm_loss


# ----------------------------------------------------------------------------------------------------------
# Saving and reusing the MLM-adapted encoder.


def _compatibility(recipe: Recipe) -> dict:
    """What must match for a saved MLM phase to be loaded into another run's model."""
    model = recipe_to_dict(recipe.model)
    # Where the model starts, only when not the pretrained model as it is: an mlm.json written before these keys
    # existed still matches a recipe without them.
    start = {"init_from": model["init_from"]} if model["init_from"] is not None else {}
    if model["num_layers"] is not None:
        start |= {"num_layers": model["num_layers"], "layer_choice": model["layer_choice"]}
    if model.get("peft") is not None:  # adapters of another type (or settings) would not fit the saved weights
        start |= {"peft": model["peft"]}
    return {"name_or_path": model["name_or_path"], "finetune": model["finetune"], "lora": model["lora"],
            "freeze_layers": model["freeze_layers"], "max_length": recipe.data.max_length, **start}


def save_mlm_phase(ctx, recipe: Recipe, streams: list[str]) -> None:
    """Write the encoder and MLM head after the MLM phase (main process), for `method.mlm.checkpoint`."""
    acc = ctx.accelerator

    def write() -> None:
        net = acc.unwrap_model(ctx.model)
        out = ctx.run.root / "mlm"
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()
                 if not k.startswith("heads.") or k.startswith("heads.mlm.")}
        save_file(state, str(out / ".model.tmp"))
        (out / ".model.tmp").replace(out / "model.safetensors")
        info = {"model": _compatibility(recipe), "mlm": recipe_to_dict(recipe.method.mlm), "streams": streams,
                "steps": ctx.state.step, "method": recipe.method.name,
                "head": dataclasses.asdict(net.heads["mlm"].spec)}
        atomic_write_json(out / "mlm.json", info)

    on_main_process(acc, write, "saving the MLM phase (`<run>/mlm/`)")


def legacy_spec(config) -> HeadSpec:
    """The head of an `mlm/` folder written before mlm.json recorded it: BERT's, with the eps read then."""
    return HeadSpec(eps=getattr(config, "layer_norm_eps", 1e-12))


def load_mlm_phase(model: AdaptModel, recipe: Recipe) -> dict:
    path = Path(recipe.method.mlm.checkpoint)
    info_file, weights = path / "mlm.json", path / "model.safetensors"
    if not (info_file.is_file() and weights.is_file()):
        raise AdaptError(f"`method.mlm.checkpoint`: {path} is not the `mlm/` folder of a dapt/tapt/udalm run "
                         "(it needs mlm.json and model.safetensors)")
    info = json.loads(info_file.read_text())
    want = _compatibility(recipe)
    diff = {k: (info["model"].get(k), want.get(k)) for k in want.keys() | info["model"].keys()
            if info["model"].get(k) != want.get(k)}
    if diff:
        detail = "; ".join(f"{k}: saved {a!r}, recipe {b!r}" for k, (a, b) in diff.items())
        raise AdaptError(f"`method.mlm.checkpoint`: {path} was trained with another model setup ({detail}); "
                         "use a matching recipe or rerun the MLM phase")
    # The head as it was trained: mlm.json records its spec; folders written before it did hold BERT's head.
    saved_spec = HeadSpec(**info["head"]) if "head" in info else legacy_spec(model.classifier.config)
    model.heads["mlm"] = rebuild_for(model.heads["mlm"], saved_spec)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    missing = [k for k in missing if not k.startswith("heads.") or k.startswith("heads.mlm.")]
    if missing or unexpected:
        raise AdaptError(f"`method.mlm.checkpoint`: {path} does not fit this model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return info


# ----------------------------------------------------------------------------------------------------------
# The methods.


class _MlmMethod(BaseMethod):
    find_unused_parameters = True  # the classifier head gets no gradient during the MLM phase
    run_dirs = ("mlm",)  # written at the MLM phase's end; a resumed run has it only if its checkpoint came after
    mlm_head_origin = "fresh"
    loaded: dict | None = None

    def heads(self, recipe: Recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        head, pretrained = build_mlm_head(classifier, model_path)
        self.mlm_head_origin = "pretrained" if pretrained else "fresh"
        return {"mlm": head}

    def prepare_model(self, model: AdaptModel, recipe: Recipe) -> None:
        if recipe.method.mlm.checkpoint:
            self.loaded = load_mlm_phase(model, recipe)
            self.mlm_head_origin = f"loaded from {recipe.method.mlm.checkpoint}"

    def mlm_streams(self, ctx: MethodContext) -> tuple[Dataset, list[str]]:
        """The texts the MLM phase reads and the split names they come from; each MLM method defines it."""
        raise NotImplementedError(f"{type(self).__name__} must say which texts its MLM phase reads")

    def masker(self, ctx: MethodContext) -> Masker:
        # Random replacement tokens come from the embedding matrix's rows (it may be larger than the tokenizer).
        vocab = classifier_of(ctx.model).get_input_embeddings().num_embeddings
        return Masker(ctx.tokenizer, vocab, ctx.recipe.method.mlm.probability)

    def mlm_phase(self, ctx: MethodContext) -> list[Phase]:
        if ctx.recipe.method.mlm.checkpoint:
            return []
        data, names = self.mlm_streams(ctx)
        mlm = ctx.recipe.method.mlm
        return [Phase("mlm", {"text": data}, make_mlm_loss(self.masker(ctx)), select=False, max_steps=mlm.steps,
                      lr=mlm.lr, after=lambda loop: save_mlm_phase(loop, ctx.recipe, names))]

    def summary(self, ctx: MethodContext) -> dict:
        out = {"mlm_head": self.mlm_head_origin}
        if self.loaded is not None:
            out["mlm_phase"] = {k: self.loaded[k] for k in ("method", "steps", "streams")}
        return out


def _domain_text(ctx: MethodContext) -> tuple[Dataset, list[str]]:
    names = ["target_unlabeled"] + (["source_train"] if ctx.recipe.method.mlm.include_source else [])
    return text_only([ctx.splits[n] for n in names]), names


class Dapt(_MlmMethod):
    def mlm_streams(self, ctx: MethodContext) -> tuple[Dataset, list[str]]:
        return _domain_text(ctx)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        return self.mlm_phase(ctx) + [supervised_phase(ctx)]


class Tapt(_MlmMethod):
    def mlm_streams(self, ctx: MethodContext) -> tuple[Dataset, list[str]]:
        names = [n for n in ("source_train", "target_train") if n in ctx.splits]
        return text_only([ctx.splits[n] for n in names]), names

    def phases(self, ctx: MethodContext) -> list[Phase]:
        return self.mlm_phase(ctx) + [supervised_phase(ctx)]


class Udalm(_MlmMethod):
    def mlm_streams(self, ctx: MethodContext) -> tuple[Dataset, list[str]]:
        return _domain_text(ctx)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        text, _ = _domain_text(ctx)
        loss = make_udalm_loss(self.masker(ctx), ctx.recipe.method.udalm.lambda_, ctx.tokenizer.pad_token_id)
        return self.mlm_phase(ctx) + [
            Phase("mixed", {"labeled": labeled_training_data(ctx), "text": text}, loss, epochs=ctx.recipe.train.epochs)]
