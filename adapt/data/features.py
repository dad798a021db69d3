"""Tokenisation and batching: token ids cached by `datasets.map`, padding per batch, batches grouped by length."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

from adapt.data.splits import Split
from adapt.recipe import DataConfig, Recipe

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def classifier_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's keyword inputs from a collated batch (drops labels and bookkeeping columns)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


def _head_tail(ids: list[int], max_length: int) -> list[int]:
    """Keep the first quarter and the last three quarters of the budget (Sun et al. 2019 found head+tail best
    for long reviews). Assumes one leading and one trailing special token, as BERT/RoBERTa-style encoders add."""
    if len(ids) <= max_length:
        return ids
    body = max_length - 2
    head = body // 4
    return ids[: 1 + head] + ids[len(ids) - 1 - (body - head):]


def encode(tokenizer, batch: dict, cfg: DataConfig) -> dict:
    """Token ids for a batch of standardised rows (`text`, optional `text_pair`)."""
    pairs = batch.get("text_pair")
    if cfg.truncation == "head_tail":
        enc = tokenizer(batch["text"], truncation=False, verbose=False)
        enc = {k: [_head_tail(seq, cfg.max_length) for seq in v] for k, v in enc.items() if k in MODEL_INPUTS}
    else:
        enc = dict(tokenizer(batch["text"], pairs, truncation=True, max_length=cfg.max_length))
        enc = {k: v for k, v in enc.items() if k in MODEL_INPUTS}
    enc["length"] = [len(ids) for ids in enc["input_ids"]]
    return enc


def tokenize(ds: Dataset, tokenizer, cfg: DataConfig, desc: str) -> Dataset:
    """Tokenise once; `datasets` caches the result on disk for file-backed data."""
    # The truncation side is tokenizer state: set it here so the cache fingerprint includes it.
    tokenizer.truncation_side = "left" if cfg.truncation == "tail" else "right"
    drop = [c for c in ("text", "text_pair") if c in ds.column_names]
    return ds.map(lambda b: encode(tokenizer, b, cfg), batched=True, remove_columns=drop, desc=f"tokenise {desc}")


class Collator:
    """Pads a list of rows to the longest in the batch (a multiple of 8 helps GPU tensor cores)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        width = -(-longest // self.multiple) * self.multiple
        out: dict[str, torch.Tensor] = {}
        for key in MODEL_INPUTS:
            if key not in rows[0]:
                continue
            fill = self.pad_token_id if key == "input_ids" else 0
            arr = np.full((len(rows), width), fill, dtype=np.int64)
            for i, r in enumerate(rows):
                arr[i, : len(r[key])] = r[key]
            out[key] = torch.from_numpy(arr)
        if "label" in rows[0]:
            out["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        out["idx"] = torch.tensor([r["idx"] for r in rows], dtype=torch.long)
        return out


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar-length examples, deterministic in (seed, epoch).

    Shuffle, cut into mega-batches of 50 batches, sort each by length, slice into batches, shuffle the batch order:
    padding drops to a few percent while batches stay random. Its own RNG (not torch's global one) keeps the data
    order identical when a run is resumed.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True, shuffle: bool = True):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group_by_length
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        if self.group:
            mega = self.batch_size * 50
            chunks = [order[i : i + mega] for i in range(0, len(order), mega)]
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def train_loader(ds: Dataset, batch_size: int, seed: int, group_by_length: bool, collate: Collator, workers: int) -> DataLoader:
    sampler = LengthGroupedBatchSampler(ds["length"], batch_size, seed, group_by_length)
    # A private generator: creating a DataLoader iterator draws a seed from it, and drawing from torch's global
    # RNG instead would shift the dropout masks after a resume (which creates one more iterator).
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed))


def eval_loader(ds: Dataset, batch_size: int, collate: Collator) -> DataLoader:
    """Examples sorted by length (least padding) in fixed-size batches, so `gather_for_metrics` can drop the
    duplicates that even sharding across processes adds."""
    order = np.argsort(-np.asarray(ds["length"]), kind="stable")
    return DataLoader(ds.select(order), batch_size=batch_size, shuffle=False, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0))  # evaluation must not consume the global RNG


def tokenize_splits(splits: dict[str, Split], tokenizer, recipe: Recipe, accelerator) -> dict[str, Dataset]:
    """Every split tokenised (`tokenize`), under `accelerate` on every process."""
    # The main process tokenises first and fills the datasets cache; the others then read it.
    with accelerator.main_process_first():
        return {name: tokenize(s.dataset, tokenizer, recipe.data, name) for name, s in splits.items()}
