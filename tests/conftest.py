"""Tiny, offline test fixtures: a random 2-layer BERT, a WordPiece tokenizer built from a vocab dict, and small
two-domain JSONL data written by the tests themselves."""

from __future__ import annotations

import json
import os
import random
from contextlib import contextmanager
from pathlib import Path

import pytest

# Before anything imports torch: one thread per test process keeps the tiny runs fast on a busy machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

POSITIVE = {"books": ["gripping", "moving", "brilliant"], "kitchen": ["sturdy", "sharp", "spotless"]}
NEGATIVE = {"books": ["boring", "shallow", "tedious"], "kitchen": ["flimsy", "dull", "rusty"]}
FILLER = ["the", "this", "is", "was", "very", "really", "quite", "a", "and", "it", "book", "pan", "item", "story"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab() -> dict[str, int]:
    words = sorted({w for d in (POSITIVE, NEGATIVE) for ws in d.values() for w in ws} | set(FILLER) | {"."})
    return {tok: i for i, tok in enumerate(SPECIAL + words)}


def make_tokenizer():
    # transformers 5.x: BertTokenizerFast(vocab_file=...) silently maps everything to [UNK], so build the
    # WordPiece tokenizer from a vocab dict with the `tokenizers` library.
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    v = vocab()
    tok = Tokenizer(WordPiece(v, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", v["[CLS]"]), ("[SEP]", v["[SEP]"])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def review(rng: random.Random, domain: str, label: int) -> str:
    cue = rng.choice((POSITIVE if label else NEGATIVE)[domain])
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 12))]
    words.insert(rng.randint(0, len(words)), cue)
    return " ".join(words) + " ."


def write_domain(path: Path, domain: str, n: int, seed: int, labeled: bool = True) -> Path:
    rng = random.Random(f"{domain}-{seed}")
    with open(path, "w") as fh:
        for i in range(n):
            label = i % 2
            row = {"id": f"{domain}-{seed}-{i}", "text": review(rng, domain, label), "domain": domain,
                   "label": ("positive" if label else "negative") if labeled else None}
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = make_tokenizer()
    # No dropout: the tests train this model for a few dozen steps and need it to learn. (Training runs in train
    # mode, so BERT's default 0.1 would be on; DANN's discriminator keeps its own dropout, and the MLM masking its
    # draws, so resuming still has random states to restore.)
    cfg = BertConfig(vocab_size=len(vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def family_model_dir(tmp_path_factory):
    """`family_model_dir(name)`: a tiny random masked-LM model folder of that family (`tests/families.py`, e.g.
    "deberta-v2"), built once per session."""
    from families import build_family

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_family(name, tmp_path_factory.mktemp(f"family-{name}"))
        return built[name]

    return get


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {
        "source_train": write_domain(d / "books_train.jsonl", "books", 96, 1),
        "source_test": write_domain(d / "books_test.jsonl", "books", 21, 2),
        "target_test": write_domain(d / "kitchen_test.jsonl", "kitchen", 23, 3),
        "target_unlabeled": write_domain(d / "kitchen_unlabeled.jsonl", "kitchen", 40, 4, labeled=False),
        "target_train": write_domain(d / "kitchen_train.jsonl", "kitchen", 32, 5),  # not in the default recipe
    }


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADAPT_CACHE", str(tmp_path_factory.getbasetemp() / "adapt-cache"))


@pytest.fixture()
def tiny_recipe(tiny_model_dir, tiny_data, tmp_path) -> Path:
    """A recipe file for the tiny model and data; tests add overrides."""
    import yaml

    recipe = {
        "seed": 0,
        "data": {
            "source": {"train": str(tiny_data["source_train"]), "test": str(tiny_data["source_test"]), "domain": "books"},
            "target": {"test": str(tiny_data["target_test"]), "unlabeled": str(tiny_data["target_unlabeled"]),
                       "domain": "kitchen"},
            "max_length": 32,
            "dev_fraction": 0.25,
        },
        "model": {"name_or_path": str(tiny_model_dir)},
        # fp32 on every machine: tests compare a saved model's predictions with the run's to 1e-5, and `auto`
        # picks bf16 autocast on CPUs with AVX512-BF16, which moves probabilities by ~1e-4.
        "train": {"epochs": 4, "batch_size": 8, "lr": 5e-3, "warmup_ratio": 0.0, "checkpoint_every_steps": 1000,
                  "mixed_precision": "no"},
        "eval": {"batch_size": 4},
        "report": {"log_every_steps": 1},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@contextmanager
def stop_at(monkeypatch, step: int):
    """Within the block, training stops at optimizer step `step` as SIGTERM would: a checkpoint, then
    `RunInterrupted`; other stop requests still count."""
    import adapt.training.loop

    real = adapt.training.loop._stop_agreed
    with monkeypatch.context() as mp:
        mp.setattr(adapt.training.loop, "_stop_agreed", lambda ctx: ctx.state.global_step == step or real(ctx))
        yield


def train_tiny(tmp: Path, model: str | Path, data: dict[str, Path], overrides: list[str]) -> Path:
    """A finished tiny run for module-scoped fixtures (the `tiny_recipe` fixture is per test), trained until its
    predictions are confident and vary: near-constant probabilities would not show a wrongly loaded model."""
    import pytest
    import yaml

    from adapt import load_recipe
    from adapt.training.run import run

    recipe = {
        "seed": 0,
        "data": {"source": {"train": str(data["source_train"]), "test": str(data["source_test"]), "domain": "books"},
                 "target": {"test": str(data["target_test"]), "domain": "kitchen"},
                 "max_length": 32, "dev_fraction": 0.25},
        "model": {"name_or_path": str(model)},
        "train": {"epochs": 12, "batch_size": 8, "lr": 2e-3, "warmup_ratio": 0.0, "checkpoint_every_steps": 1000,
                  "mixed_precision": "no"},  # fp32 on every machine, as in `tiny_recipe`
        "eval": {"batch_size": 4},
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.MonkeyPatch.context() as mp:  # `_isolated_cache` is per test; module fixtures set it themselves
        mp.setenv("ADAPT_CACHE", str(tmp / "adapt-cache"))
        run(load_recipe(path, [f"output_dir={tmp / 'run'}", *overrides]))
    return tmp / "run"
