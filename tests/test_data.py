"""The data stage (reading, checking, standardising splits; carving dev) and features (tokenising, batching)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from adapt.core.errors import AdaptError
from adapt.data.features import Collator, LengthGroupedBatchSampler, tokenize
from adapt.data.splits import load_splits
from adapt.recipe import DataConfig, load_recipe


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(n: int, domain: str | None = "books", labels=("negative", "positive"), prefix: str = "r") -> list[dict]:
    out = [{"id": f"{prefix}{i}", "text": f"the book {i} .", "label": labels[i % len(labels)]} for i in range(n)]
    if domain is not None:
        for r in out:
            r["domain"] = domain
    return out


def column(ds: Dataset, name: str) -> list:
    return list(ds[name])  # datasets 5 returns a lazy `Column`


def splits(tiny_recipe: Path, overrides: list[str]) -> tuple[dict, list[str]]:
    return load_splits(load_recipe(tiny_recipe, overrides))


def data_error(tiny_recipe: Path, overrides: list[str]) -> str:
    with pytest.raises(AdaptError) as err:
        splits(tiny_recipe, overrides)
    return str(err.value)


# ----------------------------------------------------------------------------------------------------------
# Domains.


def test_rows_are_filtered_to_the_domain(tiny_recipe, tmp_path):
    mixed = write_jsonl(tmp_path / "mixed.jsonl", rows(6, "books", prefix="b") + rows(4, "kitchen", prefix="k"))
    got, _ = splits(tiny_recipe, [f"data.source.test={mixed}", f"data.target.test={mixed}"])
    assert column(got["source_test"].dataset, "id") == [f"b{i}" for i in range(6)]
    assert column(got["target_test"].dataset, "id") == [f"k{i}" for i in range(4)]
    assert got["target_test"].domain == "kitchen"


def test_domain_without_rows_lists_the_domains_found(tiny_recipe):
    message = data_error(tiny_recipe, ["data.target.domain=garden"])
    assert "`data.target.unlabeled`" in message and "'garden'" in message and "['kitchen']" in message


def test_file_without_domain_column_is_not_filtered(tiny_recipe, tmp_path):
    plain = write_jsonl(tmp_path / "plain.jsonl", rows(5, domain=None))
    got, _ = splits(tiny_recipe, [f"data.target.test={plain}"])
    assert len(got["target_test"].dataset) == 5
    assert got["target_test"].domain == "kitchen"  # the recipe's name for it


# ----------------------------------------------------------------------------------------------------------
# Labels.


def test_string_labels_become_sorted_names(tiny_recipe):
    got, names = splits(tiny_recipe, [])
    assert names == ["negative", "positive"]
    test = got["target_test"].dataset
    raw = [json.loads(line)["label"] for line in Path(got["target_test"].spec).read_text().splitlines()]
    assert [names[i] for i in column(test, "label")] == raw


def test_int_labels_with_label_names(tiny_recipe, tmp_path):
    def ints(name: str, n: int) -> Path:
        return write_jsonl(tmp_path / f"{name}.jsonl", [{**r, "label": i % 2} for i, r in enumerate(rows(n))])

    labelled = [f"data.source.train={ints('train', 40)}", f"data.source.test={ints('test', 6)}",
                f"data.target.test={ints('target', 6)}", "~data.target.domain", "~data.target.unlabeled"]
    got, names = splits(tiny_recipe, labelled + ["data.label_names=[bad,good]"])
    assert names == ["bad", "good"]
    assert Counter(column(got["source_train"].dataset, "label") + column(got["source_dev"].dataset, "label")) == {0: 20, 1: 20}
    assert column(got["target_test"].dataset, "label") == [0, 1, 0, 1, 0, 1]
    # Without label names, integer labels name themselves.
    assert splits(tiny_recipe, labelled)[1] == ["0", "1"]


def test_null_label_names_the_split_and_the_row(tiny_recipe, tmp_path):
    bad = rows(5)
    bad[3]["label"] = None
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    message = data_error(tiny_recipe, [f"data.source.test={path}"])
    assert "`data.source.test`" in message and "row 3" in message and "no label" in message


def test_row_in_a_domain_filtered_file_is_findable(tiny_recipe, tmp_path):
    # After filtering, positions no longer match the file; the example id does.
    mixed = rows(3, "kitchen", prefix="k") + rows(3, "books", prefix="b")
    mixed[4]["label"] = None
    path = write_jsonl(tmp_path / "mixed.jsonl", mixed)
    message = data_error(tiny_recipe, [f"data.source.test={path}"])
    assert "'b1'" in message


def test_label_outside_the_label_set(tiny_recipe, tmp_path):
    bad = rows(5)
    bad[2]["label"] = "neutral"
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    message = data_error(tiny_recipe, [f"data.source.test={path}"])
    assert "`data.source.test`" in message and "'neutral'" in message and "['negative', 'positive']" in message


def test_target_label_never_seen_in_source_train(tiny_recipe, tmp_path):
    three = write_jsonl(tmp_path / "three.jsonl", rows(9, "kitchen", labels=("negative", "neutral", "positive")))
    message = data_error(tiny_recipe, [f"data.target.test={three}", "data.label_names=[negative,neutral,positive]"])
    assert "`data.target.test`" in message and "['neutral']" in message and "data.source.train" in message


def test_unlabeled_split_ignores_labels(tiny_recipe, tiny_data):
    # The tiny recipe's unlabelled file has null labels; a labelled file works too, without its labels.
    for spec in (tiny_data["target_unlabeled"], tiny_data["target_test"]):
        got, _ = splits(tiny_recipe, [f"data.target.unlabeled={spec}"])
        unlabeled = got["target_unlabeled"]
        assert not unlabeled.labeled and "label" not in unlabeled.dataset.column_names
        assert len(unlabeled.dataset) > 0


# ----------------------------------------------------------------------------------------------------------
# Columns, formats, files.


def test_wrong_text_column_lists_the_columns(tiny_recipe):
    message = data_error(tiny_recipe, ["data.text_column=body"])
    assert "`data.text_column`" in message and "'body'" in message
    assert "['id', 'text', 'domain', 'label']" in message


def test_text_must_be_a_string(tiny_recipe, tmp_path):
    bad = rows(4)
    bad[1]["text"] = 17
    message = data_error(tiny_recipe, [f"data.source.test={write_jsonl(tmp_path / 'bad.jsonl', bad)}"])
    assert "`data.source.test`" in message and "row 1" in message and "not a string" in message


@pytest.mark.parametrize("content", ["", "\n\n"], ids=["no-bytes", "blank-lines"])
def test_empty_split(tiny_recipe, tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    message = data_error(tiny_recipe, [f"data.source.test={path}"])
    assert "`data.source.test` is empty" in message


def test_duplicate_ids(tiny_recipe, tmp_path):
    dup = rows(4)
    dup[3]["id"] = dup[0]["id"]
    message = data_error(tiny_recipe, [f"data.source.test={write_jsonl(tmp_path / 'dup.jsonl', dup)}"])
    assert "`data.source.test`" in message and "'r0'" in message and "unique" in message


def test_missing_file_names_the_key(tiny_recipe, tmp_path):
    message = data_error(tiny_recipe, [f"data.target.test={tmp_path / 'nope.jsonl'}"])
    assert "`data.target.test`" in message and "nope.jsonl" in message


def test_csv_parquet_and_globs_load(tiny_recipe, tmp_path):
    import pandas as pd

    frame = pd.DataFrame(rows(6, "kitchen"))
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    write_jsonl(tmp_path / "part-1.jsonl", rows(3, "kitchen", prefix="a"))
    write_jsonl(tmp_path / "part-2.jsonl", rows(4, "kitchen", prefix="b"))
    globbed = rows(3, "kitchen", prefix="a") + rows(4, "kitchen", prefix="b")
    for spec, expected in ((tmp_path / "t.csv", rows(6)), (tmp_path / "t.parquet", rows(6)), (tmp_path / "part-*.jsonl", globbed)):
        got, names = splits(tiny_recipe, [f"data.target.test={spec}"])
        test = got["target_test"].dataset
        assert column(test, "id") == [r["id"] for r in expected], spec
        assert column(test, "text") == [r["text"] for r in expected], spec
        assert [names[i] for i in column(test, "label")] == [r["label"] for r in expected], spec


# ----------------------------------------------------------------------------------------------------------
# Carving a dev split.


def skewed_source(tmp_path: Path) -> Path:
    counts = {"a": 60, "b": 30, "c": 10}
    out = [{"id": f"{name}{i}", "text": "the book .", "label": name} for name, n in counts.items() for i in range(n)]
    return write_jsonl(tmp_path / "skewed.jsonl", out)


def carved(tiny_recipe: Path, source: Path, seed: int) -> tuple[Dataset, Dataset]:
    got, _ = splits(tiny_recipe, [f"data.source.train={source}", "data.source.test=" + str(source),
                                  "data.target.test=" + str(source), "~data.source.domain", "~data.target.domain",
                                  "~data.target.unlabeled", "data.dev_fraction=0.2", f"seed={seed}"])
    return got["source_train"].dataset, got["source_dev"].dataset


def test_dev_is_carved_stratified_and_disjoint(tiny_recipe, tmp_path):
    source = skewed_source(tmp_path)
    for seed in (0, 1, 2):
        train, dev = carved(tiny_recipe, source, seed)
        assert len(dev) == 20 and len(train) == 80
        assert not set(column(train, "id")) & set(column(dev, "id"))
        for label, expected in Counter({0: 12, 1: 6, 2: 2}).items():
            assert abs(column(dev, "label").count(label) - expected) <= 1, (seed, Counter(column(dev, "label")))
        assert column(train, "idx") == list(range(80)) and column(dev, "idx") == list(range(20))


def test_dev_carve_is_seeded(tiny_recipe, tmp_path):
    source = skewed_source(tmp_path)
    first, again, other = (column(carved(tiny_recipe, source, seed)[1], "id") for seed in (0, 0, 1))
    assert first == again
    assert set(first) != set(other)


# ----------------------------------------------------------------------------------------------------------
# Tokenising.

WORDS = ["gripping", "moving", "brilliant", "sturdy", "sharp", "spotless", "boring", "shallow", "tedious",
         "flimsy", "dull", "rusty", "the", "this", "is", "was", "very", "really", "quite", "a"]


@pytest.fixture()
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def token_ids(tokenizer, truncation: str, text: str, max_length: int = 12) -> list[int]:
    cfg = DataConfig(max_length=max_length, truncation=truncation)
    return tokenize(Dataset.from_dict({"text": [text]}), tokenizer, cfg, "test")[0]["input_ids"]


def test_truncation_sides(tokenizer):
    words = tokenizer.convert_tokens_to_ids(WORDS)
    assert tokenizer.unk_token_id not in words
    text = " ".join(WORDS)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    assert token_ids(tokenizer, "head", text) == [cls, *words[:10], sep]
    assert token_ids(tokenizer, "tail", text) == [cls, *words[-10:], sep]
    # head_tail: a quarter of the 14-token body from the start, the rest from the end.
    both = token_ids(tokenizer, "head_tail", text, max_length=16)
    assert both == [cls, *words[:3], *words[-11:], sep] and len(both) == 16
    # Short texts are left alone in every mode.
    for mode in ("head", "tail", "head_tail"):
        assert token_ids(tokenizer, mode, "the book") == [cls, *tokenizer.convert_tokens_to_ids(["the", "book"]), sep]


def test_tokenize_records_lengths(tokenizer):
    ds = tokenize(Dataset.from_dict({"text": ["the book", " ".join(WORDS)], "idx": [0, 1]}), tokenizer,
                  DataConfig(max_length=12), "test")
    assert column(ds, "length") == [4, 12] and column(ds, "idx") == [0, 1] and "text" not in ds.column_names


# ----------------------------------------------------------------------------------------------------------
# Batching.


def padding_fraction(batches: list[list[int]], lengths: np.ndarray) -> float:
    padded = sum(len(b) * lengths[b].max() for b in batches)
    real = sum(lengths[b].sum() for b in batches)
    return (padded - real) / real


def test_sampler_covers_every_index_once_and_is_deterministic():
    lengths = np.random.default_rng(0).integers(1, 200, size=1003)
    sampler = LengthGroupedBatchSampler(lengths.tolist(), batch_size=16, seed=7)
    epoch0 = sampler.batches()
    assert len(epoch0) == len(sampler) == 63
    assert sorted(i for b in epoch0 for i in b) == list(range(1003))
    assert LengthGroupedBatchSampler(lengths.tolist(), batch_size=16, seed=7).batches() == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(i for b in epoch1 for i in b) == list(range(1003))
    assert epoch1 != epoch0
    assert LengthGroupedBatchSampler(lengths.tolist(), batch_size=16, seed=8).batches() != epoch0


def test_grouping_by_length_cuts_padding():
    lengths = np.random.default_rng(0).integers(1, 200, size=2000)
    grouped = LengthGroupedBatchSampler(lengths.tolist(), 16, seed=0, group_by_length=True).batches()
    plain = LengthGroupedBatchSampler(lengths.tolist(), 16, seed=0, group_by_length=False).batches()
    assert padding_fraction(plain, lengths) > 0.5
    assert padding_fraction(grouped, lengths) < 0.05


def test_collator_pads_to_a_multiple_of_eight():
    batch = Collator(pad_token_id=3)([
        {"input_ids": [2, 10, 11], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "label": 1, "idx": 4},
        {"input_ids": list(range(20, 30)), "attention_mask": [1] * 10, "token_type_ids": [0] * 10, "label": 0, "idx": 9},
    ])
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == [2, 10, 11] + [3] * 13
    assert batch["input_ids"][1].tolist() == list(range(20, 30)) + [3] * 6
    assert batch["attention_mask"].sum(1).tolist() == [3, 10]
    assert batch["attention_mask"][0, 3:].eq(0).all() and batch["token_type_ids"].eq(0).all()
    assert batch["labels"].tolist() == [1, 0] and batch["idx"].tolist() == [4, 9]
    assert batch["labels"].dtype == batch["input_ids"].dtype == batch["idx"].dtype
    # Already a multiple of 8: no extra padding; no labels on unlabelled rows.
    batch = Collator(pad_token_id=3)([{"input_ids": list(range(8)), "attention_mask": [1] * 8, "idx": 0}])
    assert batch["input_ids"].shape == (1, 8) and "labels" not in batch


def test_amazon_unlabeled_normalisation_matches_that_style(tiny_recipe, tmp_path):
    from adapt.data.splits import amazon_unlabeled_style

    raw = 'I don\'t like it! The APC Back-UPS ES 500s is "great", really. It\'s 5 stars.'
    assert amazon_unlabeled_style(raw) == "i do n't like it ! the apc es is '' great '' really it 's 5 stars"
    assert amazon_unlabeled_style(amazon_unlabeled_style(raw)) == amazon_unlabeled_style(raw)  # idempotent

    from adapt.data.splits import load_splits

    splits, _ = load_splits(load_recipe(tiny_recipe, ["data.normalize=amazon_unlabeled"]))
    texts = splits["source_test"].dataset["text"]
    assert all(t == amazon_unlabeled_style(t) and "." not in t for t in texts)
