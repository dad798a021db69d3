"""The masked-LM head of every encoder family, initialised from the checkpoint's own when it has one, and BERT's
masking, for the MLM methods."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from adapt.model.weights import checkpoint_files


@dataclass(frozen=True)
class HeadSpec:
    """What shapes an `MlmHead` beyond the sizes of the encoder: saved in `mlm/mlm.json`, so that a reused MLM phase
    rebuilds the head it trained whatever this version of adapt would build for the checkpoint now."""

    activation: str = "gelu"
    eps: float = 1e-12
    dense_bias: bool = True
    norm_bias: bool = True  # ModernBERT's LayerNorms have no bias
    output_bias: bool = True  # ModernBERT's `decoder_bias: false` drops it


class MlmHead(nn.Module):
    """The masked-LM head all BERT-like families share: dense (hidden -> embedding size), activation, LayerNorm,
    then the word embeddings transposed as the decoder, plus an output bias.

    The decoder is tied to the encoder's input embeddings, as in pretraining: the head adds only ~0.2M parameters
    and starts from a meaningful output space even when the checkpoint has no MLM head. The embedding module is held
    outside the module tree so its weight is not saved (or optimised) twice. Factorised embeddings (ELECTRA, narrower
    than the encoder) are why the dense layer ends at the embedding width, not the hidden size.

    As a head of `AdaptModel` it is called with the last hidden states and the MLM labels (-100 where nothing is
    predicted), and projects only the predicted positions (~15% of the tokens) onto the vocabulary.
    """

    def __init__(self, embeddings: nn.Embedding, hidden_size: int, spec: HeadSpec = HeadSpec()):
        super().__init__()
        width = embeddings.embedding_dim
        self.spec = spec
        self.dense = nn.Linear(hidden_size, width, bias=spec.dense_bias)
        self.act = ACT2FN[spec.activation]
        self.norm = nn.LayerNorm(width, eps=spec.eps, bias=spec.norm_bias)
        bias = nn.Parameter(torch.zeros(embeddings.num_embeddings)) if spec.output_bias else None
        self.register_parameter("bias", bias)
        object.__setattr__(self, "_embeddings", embeddings)
        nn.init.normal_(self.dense.weight, std=0.02)
        if self.dense.bias is not None:
            nn.init.zeros_(self.dense.bias)

    @property
    def decoder_weight(self) -> torch.Tensor:
        """The tied decoder: the encoder's word embedding matrix itself."""
        return self._embeddings.weight

    def forward(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(self.dense(hidden_states[labels != -100])))
        return F.linear(h, self._embeddings.weight, self.bias)


# ----------------------------------------------------------------------------------------------------------
# Where each family's *ForMaskedLM keeps its head. The structure (biases, eps) is read from the family's own
# class built on the meta device, so only the module names are written here; a family missing from the table
# gets a fresh head.


@dataclass(frozen=True)
class Layout:
    dense: str  # the hidden -> embedding-size Linear
    norm: str  # the LayerNorm after the activation
    bias: tuple[str, ...]  # the output bias: transformers ties several names to it, a checkpoint may hold any one
    activation: str | None = "hidden_act"  # the config field naming the activation; None: GELU, fixed by the family


_BERT = Layout("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
               ("cls.predictions.bias", "cls.predictions.decoder.bias"))
_ROBERTA = Layout("lm_head.dense", "lm_head.layer_norm", ("lm_head.bias", "lm_head.decoder.bias"), None)
LAYOUTS: dict[str, tuple[Layout, ...]] = {
    "bert": (_BERT,),
    "roberta": (_ROBERTA,), "xlm-roberta": (_ROBERTA,), "camembert": (_ROBERTA,), "mpnet": (_ROBERTA,),
    "distilbert": (Layout("vocab_transform", "vocab_layer_norm", ("vocab_projector.bias",), "activation"),),
    # ELECTRA's generator is its masked LM; a discriminator checkpoint (electra-*-discriminator) has no such head.
    "electra": (Layout("generator_predictions.dense", "generator_predictions.LayerNorm", ("generator_lm_head.bias",),
                       None),),
    "modernbert": (Layout("head.dense", "head.norm", ("decoder.bias",), "classifier_activation"),),
    # `config.legacy` picks which of the two names transformers builds; a checkpoint holding either is read (the
    # heads compute the same when the embeddings are as wide as the encoder).
    "deberta-v2": (_BERT, Layout("lm_predictions.lm_head.dense", "lm_predictions.lm_head.LayerNorm",
                                 ("lm_predictions.lm_head.bias",))),
}


def _mlm_skeleton(config) -> nn.Module:
    """The family's *ForMaskedLM on the meta device: its head's structure and parameter names, no memory."""
    from transformers import AutoModelForMaskedLM

    with torch.device("meta"):
        return AutoModelForMaskedLM.from_config(config)


def family_spec(config) -> HeadSpec | None:
    """The spec of the family's own MLM head, read off its *ForMaskedLM; None for a family not in `LAYOUTS`."""
    if config.model_type not in LAYOUTS:
        return None
    mlm = _mlm_skeleton(config)
    names = set(mlm.state_dict())
    layout = next((lo for lo in LAYOUTS[config.model_type] if f"{lo.dense}.weight" in names), None)
    if layout is None:  # a transformers version that renamed the family's head
        return None
    dense, norm = mlm.get_submodule(layout.dense), mlm.get_submodule(layout.norm)
    activation = getattr(config, layout.activation, "gelu") if layout.activation else "gelu"
    return HeadSpec(activation=activation, eps=norm.eps, dense_bias=dense.bias is not None,
                    norm_bias=norm.bias is not None, output_bias=any(b in names for b in layout.bias))


def fresh_spec(config) -> HeadSpec:
    """A fresh head's spec for a family not in `LAYOUTS`: BERT's, with the config's eps."""
    eps = getattr(config, "layer_norm_eps", None) or getattr(config, "norm_eps", None) or 1e-12
    return HeadSpec(eps=eps)


def build_mlm_head(classifier: nn.Module, model_path: str) -> tuple[MlmHead, bool]:
    """The MLM head for `classifier`, tied to its word embeddings, and whether it starts from the checkpoint's own
    head (True) or fresh (False: the checkpoint has none, e.g. a sentence-embedding fine-tune)."""
    config = classifier.config
    embeddings = classifier.get_input_embeddings()
    spec = family_spec(config)
    head = MlmHead(embeddings, config.hidden_size, spec or fresh_spec(config))
    return head, spec is not None and load_pretrained_mlm_head(head, model_path, config.model_type)


def _checkpoint_tensors(model_path: str, wanted: set[str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(model_path):
        with safe_open(str(f), "pt") as sf:
            found.update({k: sf.get_tensor(k) for k in wanted & set(sf.keys())})
    return found


def _checkpoint_names(layout: Layout, head: MlmHead, available: set[str]) -> dict[str, str]:
    """Our parameter name -> the checkpoint's, for every parameter `head` has (the bias under the first alias found)."""
    names = {f"{part}.{p}": f"{prefix}.{p}" for part, prefix in (("dense", layout.dense), ("norm", layout.norm))
             for p in ("weight", "bias")}
    names["bias"] = next((b for b in layout.bias if b in available), layout.bias[0])
    return {ours: names[ours] for ours, _ in head.named_parameters()}


def load_pretrained_mlm_head(head: MlmHead, model_path: str, model_type: str = "bert") -> bool:
    """Copy the checkpoint's own MLM head into `head` when the checkpoint has all of it, with `head`'s shapes.

    Returns False (the head stays as it was) for checkpoints without one: a sentence-embedding fine-tune, an ELECTRA
    discriminator, a classifier fine-tuned from the family, or a family not in `LAYOUTS`.
    """
    layouts = LAYOUTS.get(model_type, ())
    wanted = {n for lo in layouts for n in (*(f"{m}.{p}" for m in (lo.dense, lo.norm) for p in ("weight", "bias")),
                                              *lo.bias)}
    found = _checkpoint_tensors(model_path, wanted) if layouts else {}
    params = dict(head.named_parameters())
    for layout in layouts:
        names = _checkpoint_names(layout, head, set(found))
        if all(n in found and found[n].shape == params[ours].shape for ours, n in names.items()):
            with torch.no_grad():
                for ours, n in names.items():
                    params[ours].copy_(found[n])
            return True
    return False


def rebuild_for(head: MlmHead, spec: HeadSpec) -> MlmHead:
    """`head` with another spec (same embeddings and sizes): for loading an `mlm/` folder written with that spec."""
    return head if head.spec == spec else MlmHead(head._embeddings, head.dense.in_features, spec)


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor, mask_id: int,
                vocab_size: int, probability: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: select `probability` of the real (non-special, non-padding) tokens; of those 80% become
    [MASK], 10% a random token, 10% stay. Returns (masked ids, labels with -100 where nothing is predicted).

    Drawn from torch's RNG on the batch's device, which checkpoints save and restore, so a resumed run masks the
    same way."""
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
    draw = torch.rand(input_ids.shape, device=input_ids.device)
    selected = candidates & (draw < probability)
    # Reuse the draw for the 80/10/10 split: conditioned on selection it is uniform on [0, probability).
    kind = draw / probability
    ids = input_ids.clone()
    ids[selected & (kind < 0.8)] = mask_id
    random_pos = selected & (kind >= 0.8) & (kind < 0.9)
    ids[random_pos] = torch.randint(vocab_size, (int(random_pos.sum()),), device=ids.device)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return ids, labels
