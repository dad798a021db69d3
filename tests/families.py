"""Tiny random encoders of every family `adapt` supports, built offline: a *ForMaskedLM model (so the checkpoint
has the family's pretrained MLM head) and a tokenizer of the family's own class and subword model (WordPiece,
byte-level BPE or Unigram), trained on the test corpus of `conftest.py`. Each takes a fraction of a second once
transformers is imported.

    from families import FAMILIES, build_family
    path = build_family("deberta-v2", tmp_path / "deberta")   # a model directory `adapt` loads like a Hub one

A plain module, not a test file; `conftest.py` wraps it in the session fixture `family_model_dir(name)`."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import FILLER, NEGATIVE, POSITIVE, review

# Every family a user may bring, by the `model_type` transformers writes in config.json.
FAMILIES: list[str] = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "modernbert", "deberta-v2", "mpnet"]

MAX_LENGTH = 64  # the tokenizers' model_max_length; the tests use data.max_length 32


def corpus() -> list[str]:
    """Sentences of the test corpus, every word of it at least once (so no word needs [UNK])."""
    import random

    rng = random.Random(0)
    words = sorted({w for d in (POSITIVE, NEGATIVE) for ws in d.values() for w in ws} | set(FILLER))
    lines = [" ".join(words) + " ."]
    lines += [review(rng, domain, label) for domain in POSITIVE for label in (0, 1) for _ in range(50)]
    return lines


# -- tokenizers ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Specials:
    """The family's special tokens, in the order of their ids (the real checkpoints' order, ids 0..n-1)."""

    ordered: tuple[str, ...]
    names: dict[str, str]  # tokenizer argument -> token, e.g. {"cls_token": "[CLS]"}


BERT_SPECIALS = Specials(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
                         {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                          "mask_token": "[MASK]"})
ROBERTA_SPECIALS = Specials(("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
                            {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                             "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"})
# MPNet: RoBERTa's sentence tokens around a BERT WordPiece vocabulary that keeps BERT's [UNK].
MPNET_SPECIALS = Specials(("<s>", "<pad>", "</s>", "[UNK]", "<mask>"),
                          {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "[UNK]",
                           "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"})
DEBERTA_SPECIALS = Specials(("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"),
                            {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]",
                             "mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]"})


def _train(model, trainer, normalizer, pre_tokenizer) -> dict:
    """Train a `tokenizers` subword model on the corpus; returns its JSON (vocab, and merges for BPE)."""
    from tokenizers import Tokenizer

    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(corpus(), trainer)
    return json.loads(tok.to_str())["model"]


def wordpiece_vocab(specials: Specials) -> dict[str, int]:
    from tokenizers import normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    trained = _train(WordPiece(unk_token=specials.names["unk_token"]),
                     WordPieceTrainer(vocab_size=300, special_tokens=list(specials.ordered)),
                     normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer())
    return trained["vocab"]


def bpe_vocab(specials: Specials) -> tuple[dict[str, int], list[str]]:
    from tokenizers import pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    trained = _train(BPE(), BpeTrainer(vocab_size=400, special_tokens=list(specials.ordered),
                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
                     None, pre_tokenizers.ByteLevel(add_prefix_space=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in trained["merges"]]
    return trained["vocab"], merges


def unigram_vocab(specials: Specials) -> list[tuple[str, float]]:
    from tokenizers import pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    trained = _train(Unigram(), UnigramTrainer(vocab_size=200, special_tokens=list(specials.ordered),
                                               unk_token=specials.names["unk_token"]),
                     None, pre_tokenizers.Metaspace())
    # On a corpus this small the Unigram trainer prunes down to characters; add every corpus word as a piece
    # scored by its log frequency, as SentencePiece would keep it on a real corpus, so words stay one piece.
    counts = Counter(w for line in corpus() for w in line.split())
    total = sum(counts.values())
    pieces = [(piece, score) for piece, score in trained["vocab"]]
    known = {piece for piece, _ in pieces}
    pieces += [("\u2581" + w, math.log(n / total)) for w, n in sorted(counts.items()) if "\u2581" + w not in known]
    return pieces


def _wordpiece(cls_name: str, specials: Specials):
    import transformers

    return getattr(transformers, cls_name)(vocab=wordpiece_vocab(specials), model_max_length=MAX_LENGTH,
                                           **specials.names)


def _roberta_tokenizer():
    from transformers import RobertaTokenizer

    vocab, merges = bpe_vocab(ROBERTA_SPECIALS)
    return RobertaTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=MAX_LENGTH, **ROBERTA_SPECIALS.names)


def _modernbert_tokenizer():
    # ModernBERT ships a byte-level BPE (OLMo's) with BERT's [CLS]/[SEP] template in a generic fast tokenizer.
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab, merges = bpe_vocab(BERT_SPECIALS)
    tok = Tokenizer(BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MAX_LENGTH, **BERT_SPECIALS.names)


def _unigram(cls_name: str, specials: Specials):
    import transformers

    return getattr(transformers, cls_name)(vocab=unigram_vocab(specials), model_max_length=MAX_LENGTH,
                                           **specials.names)


# -- models --------------------------------------------------------------------------------------------------------

# Tiny shapes shared by every family: 2 layers, hidden 32, 2 heads, no dropout (the tests train for a few steps
# and compare probabilities). Each family adds the fields it needs to look like its real checkpoints.
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@dataclass(frozen=True)
class Family:
    config_class: str
    mlm_class: str
    tokenizer: Callable[[], object]
    config: Callable[[object], dict]  # the tokenizer -> config fields beyond the vocabulary size


def _special_ids(tok) -> dict:
    return {"pad_token_id": tok.pad_token_id}


def _offset_positions(tok) -> dict:
    # RoBERTa-style position ids start after the padding index, so the table needs pad_token_id + 1 more rows.
    return {**TINY, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id,
            "max_position_embeddings": MAX_LENGTH + tok.pad_token_id + 1}


FAMILY_SPECS: dict[str, Family] = {
    "bert": Family("BertConfig", "BertForMaskedLM", lambda: _wordpiece("BertTokenizer", BERT_SPECIALS),
                   lambda tok: {**TINY, **_special_ids(tok), "max_position_embeddings": MAX_LENGTH}),
    "roberta": Family("RobertaConfig", "RobertaForMaskedLM", _roberta_tokenizer, _offset_positions),
    "xlm-roberta": Family("XLMRobertaConfig", "XLMRobertaForMaskedLM",
                          lambda: _unigram("XLMRobertaTokenizer", ROBERTA_SPECIALS), _offset_positions),
    # ELECTRA-small factorises its embeddings: 128-wide embeddings projected up to the 256-wide encoder.
    "electra": Family("ElectraConfig", "ElectraForMaskedLM", lambda: _wordpiece("ElectraTokenizer", BERT_SPECIALS),
                      lambda tok: {**TINY, **_special_ids(tok), "embedding_size": 16,
                                   "max_position_embeddings": MAX_LENGTH}),
    "distilbert": Family("DistilBertConfig", "DistilBertForMaskedLM",
                         lambda: _wordpiece("DistilBertTokenizer", BERT_SPECIALS),
                         lambda tok: {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "dropout": 0.0,
                                      "attention_dropout": 0.0, "max_position_embeddings": MAX_LENGTH,
                                      **_special_ids(tok)}),
    "modernbert": Family("ModernBertConfig", "ModernBertForMaskedLM", _modernbert_tokenizer,
                         lambda tok: {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                      "intermediate_size": 64, "max_position_embeddings": MAX_LENGTH,
                                      "local_attention": 16, "global_attn_every_n_layers": 2,
                                      "pad_token_id": tok.pad_token_id, "cls_token_id": tok.cls_token_id,
                                      "sep_token_id": tok.sep_token_id, "bos_token_id": tok.cls_token_id,
                                      "eos_token_id": tok.sep_token_id}),
    # DeBERTa-v3's layout: relative attention with log buckets, no absolute positions, a LayerNorm on the shared
    # relative embeddings (`encoder.rel_embeddings`, `encoder.LayerNorm`).
    "deberta-v2": Family("DebertaV2Config", "DebertaV2ForMaskedLM",
                         lambda: _unigram("DebertaV2Tokenizer", DEBERTA_SPECIALS),
                         lambda tok: {**TINY, **_special_ids(tok), "max_position_embeddings": MAX_LENGTH,
                                      "relative_attention": True, "position_buckets": 16,
                                      "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
                                      "position_biased_input": False, "norm_rel_ebd": "layer_norm",
                                      "share_att_key": True, "type_vocab_size": 0}),
    # MPNet: a relative-position bias shared by every layer (`encoder.relative_attention_bias`). Its 32 buckets
    # are not a free choice: transformers' MPNet buckets positions into 32 whatever the config says.
    "mpnet": Family("MPNetConfig", "MPNetForMaskedLM", lambda: _wordpiece("MPNetTokenizer", MPNET_SPECIALS),
                    lambda tok: {**_offset_positions(tok), "relative_attention_num_buckets": 32}),
}


def build_tokenizer(name: str):
    """The family's tokenizer, checked: every corpus word maps to known pieces (no [UNK] flood)."""
    tok = FAMILY_SPECS[name].tokenizer()
    ids = [i for line in corpus()[1:] for i in tok(line)["input_ids"]]
    ids += [i for w in corpus()[0].split() for i in tok(w)["input_ids"]]
    unknown = sum(i == tok.unk_token_id for i in ids)
    assert unknown == 0, f"{name}: {unknown} of {len(ids)} tokens are {tok.unk_token}"
    assert tok.cls_token_id is not None and tok.pad_token_id is not None and tok.mask_token_id is not None
    return tok


def build_family(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random `name` masked-LM model and its tokenizer to `out_dir`; returns `out_dir`."""
    import torch
    import transformers

    if name not in FAMILY_SPECS:
        raise ValueError(f"unknown family {name!r}; choose from {FAMILIES}")
    spec = FAMILY_SPECS[name]
    tok = build_tokenizer(name)
    config = getattr(transformers, spec.config_class)(vocab_size=len(tok), **spec.config(tok))
    torch.manual_seed(seed)
    model = getattr(transformers, spec.mlm_class)(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    # What the other tests rely on, checked once here: the saved folder reloads as the same family and tokenizer.
    reloaded = transformers.AutoTokenizer.from_pretrained(out_dir)
    line = corpus()[1]
    assert reloaded(line)["input_ids"] == tok(line)["input_ids"], f"{name}: the saved tokenizer encodes differently"
    assert transformers.AutoConfig.from_pretrained(out_dir).model_type == name
    return out_dir
