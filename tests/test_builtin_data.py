"""The generated review corpus: fixed content (guarded by the hashes in its data card), sizes, balance, and the
`builtin:` recipe scheme."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

import adapt.builtin_data as builtin_command
from adapt.core.errors import AdaptError
from adapt.data import builtin as builtin_data
from adapt.data.splits import read_spec

CARD = Path(__file__).resolve().parent.parent / "data_cards" / "builtin_reviews.md"


def test_output_matches_the_hashes_in_the_data_card(tmp_path):
    """A change to the generator must bump VERSION (caches are keyed by it) and update the card."""
    documented = dict(re.findall(r"\| `(\w+)\.jsonl` \| [\d,]+ \| `([0-9a-f]{64})` \|", CARD.read_text()))
    assert set(documented) == {"train", "test", "unlabeled"}
    assert builtin_command.main(["--out", str(tmp_path)]) == 0
    for split, digest in documented.items():
        assert hashlib.sha256((tmp_path / f"{split}.jsonl").read_bytes()).hexdigest() == digest, split


@pytest.mark.parametrize(("split", "per_domain"), [("train", 1200), ("test", 400), ("unlabeled", 1500)])
def test_sizes_and_balance(split, per_domain):
    rows = builtin_data.generate("reviews", split)
    by_domain = Counter(r["domain"] for r in rows)
    assert by_domain == {d: per_domain for d in builtin_data.domains("reviews")}
    assert len({r["id"] for r in rows}) == len(rows)
    if split == "unlabeled":
        assert all(r["label"] is None for r in rows)
        return
    for domain in by_domain:
        labels = Counter(r["label"] for r in rows if r["domain"] == domain)
        assert set(labels) == {"negative", "positive"}
        assert abs(labels["positive"] - per_domain / 2) <= 0.05 * per_domain


def test_no_text_is_shared_between_splits():
    texts = {s: {r["text"] for r in builtin_data.generate("reviews", s)} for s in builtin_data.splits("reviews")}
    assert not texts["train"] & texts["test"] and not texts["test"] & texts["unlabeled"]


def test_recipe_scheme_reads_the_materialised_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPT_CACHE", str(tmp_path))
    ds, sha = read_spec("builtin:reviews/test", "data.source.test")
    assert len(ds) == 1600 and set(ds.column_names) == {"id", "text", "label", "domain"}
    assert (tmp_path / "builtin" / f"reviews-{builtin_data.VERSION}" / "test.jsonl").exists()
    with pytest.raises(AdaptError, match="unknown built-in data 'builtin:reviews/dev'.*builtin:reviews/train"):
        read_spec("builtin:reviews/dev", "data.source.dev")
