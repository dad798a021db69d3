"""The fixed Amazon carve (`adapt.carve`) and the `amazon:<domain>/<split>` recipe scheme, on a small synthetic
four-domain data folder with planted duplicate groups (never the real data)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest

import adapt.carve as carve_command
from adapt.core.errors import AdaptError
from adapt.data import carve
from adapt.data.specs import spec_problems
from adapt.data.splits import load_splits, read_spec
from adapt.recipe import load_recipe

ROWS_PER_LABEL = 240  # enough for the default 100 + 100 per label that the recipe scheme carves
WORDS = ["".join(p) for p in itertools.product("bdfgklmnprst", "aeiou", "bdfgklmnprst")]


def _variant(text: str, copy: int) -> str:
    """A copy that differs only in case, whitespace or punctuation: the carve must still see a duplicate."""
    return [text, "  " + text.upper().replace(" ", "   "), text.replace(" ", ", ") + "!", text.title()][copy % 4]


def _domain_rows(domain: str) -> tuple[list[dict], list[list[str]]]:
    """Rows of one domain, and the ids of each planted duplicate group (exact variants and one near duplicate)."""
    rng = random.Random(domain)
    texts = [(" ".join(rng.choices(WORDS, k=20)), i % 2) for i in range(2 * ROWS_PER_LABEL)]
    groups: list[list[int]] = []
    start = 0
    for size in (2, 3, 4, 2, 3, 4):  # copies overwrite the rows after the original, keeping labels balanced
        base, label = texts[start]
        for copy in range(1, size):
            texts[start + 2 * copy] = (_variant(base, copy), label)
        groups.append([start + 2 * copy for copy in range(size)])
        start += 2 * size
    words = texts[start][0].split()
    texts[start + 2] = (" ".join([*words[:10], "zzz", *words[11:]]), texts[start][1])  # one word edited
    groups.append([start, start + 2])
    rows = [{"text": t, "label": label, "domain": domain, "id": f"{domain}/{i:04d}"} for i, (t, label) in enumerate(texts)]
    return rows, [[rows[i]["id"] for i in g] for g in groups]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("amazon")
    for domain in carve.DOMAINS:
        rows, _ = _domain_rows(domain)
        (d / f"{domain}.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        unlabeled = [{"text": f"unlabelled {domain} text {w}", "label": None, "domain": domain, "id": str(i)}
                     for i, w in enumerate(WORDS[:30])]
        (d / f"{domain}.unlabeled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in unlabeled))
    return d


@pytest.fixture(scope="module")
def carved(data_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("carve")
    return out, carve.carve_dir(data_dir, out, n_dev=20, n_test=30)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_sizes_and_label_balance(carved):
    out, _ = carved
    for domain in carve.DOMAINS:
        parts = {s: _read(out / f"{domain}.{s}.jsonl") for s in carve.SPLITS}
        assert {s: len(rows) for s, rows in parts.items()} == {"train": 430, "dev": 20, "test": 30}
        assert Counter(r["label"] for r in parts["dev"]) == {0: 10, 1: 10}
        assert Counter(r["label"] for r in parts["test"]) == {0: 15, 1: 15}


def test_rows_are_kept_whole_and_each_goes_to_exactly_one_split(carved):
    out, _ = carved
    for domain in carve.DOMAINS:
        rows, _ = _domain_rows(domain)
        written = [r for s in carve.SPLITS for r in _read(out / f"{domain}.{s}.jsonl")]
        assert sorted(written, key=lambda r: r["id"]) == rows


def test_duplicate_groups_stay_on_one_side_and_no_text_is_shared(carved):
    out, _ = carved
    for domain in carve.DOMAINS:
        split_of = {r["id"]: s for s in carve.SPLITS for r in _read(out / f"{domain}.{s}.jsonl")}
        _, groups = _domain_rows(domain)
        for group in groups:
            assert {split_of[i] for i in group} == {"train"}, group  # only singletons may go to dev/test
        texts = {s: {_norm(r["text"]) for r in _read(out / f"{domain}.{s}.jsonl")} for s in carve.SPLITS}
        for a, b in itertools.combinations(carve.SPLITS, 2):
            assert not texts[a] & texts[b], (domain, a, b)


def test_duplicate_groups_finds_the_planted_groups():
    rows, groups = _domain_rows("books")
    found = [[rows[i]["id"] for i in g] for g in carve.duplicate_groups([r["text"] for r in rows])]
    assert found == groups


def test_same_inputs_give_byte_identical_files(carved, data_dir, tmp_path):
    out, _ = carved
    carve.carve_dir(data_dir, tmp_path, n_dev=20, n_test=30)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 * len(carve.DOMAINS) + 1
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_a_different_seed_gives_a_different_carve():
    rows, _ = _domain_rows("dvd")
    ids = lambda parts: {s: [r["id"] for r in parts[s]] for s in ("dev", "test")}  # noqa: E731
    first = ids(carve.carve_domain(rows, n_dev=20, n_test=20))
    assert ids(carve.carve_domain(rows, n_dev=20, n_test=20)) == first
    assert ids(carve.carve_domain(rows, n_dev=20, n_test=20, seed=carve.CARVE_SEED + 1)) != first


def test_too_few_unique_reviews_is_a_clear_error():
    rows, _ = _domain_rows("books")
    with pytest.raises(AdaptError, match=r"label 0 has \d+ reviews outside duplicate groups"):
        carve.carve_domain(rows, n_dev=240, n_test=240)


def test_carve_json_records_version_seed_counts_and_hashes(carved, data_dir):
    out, manifest = carved
    assert json.loads((out / "carve.json").read_text()) == manifest
    assert (manifest["version"], manifest["seed"], manifest["n_dev"], manifest["n_test"]) == (
        carve.CARVE_VERSION, carve.CARVE_SEED, 20, 30)
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    for domain in carve.DOMAINS:
        name = f"{domain}.train.jsonl"
        assert manifest["inputs"][name] == {"rows": 480, "labels": {"0": 240, "1": 240}, "sha256": sha(data_dir / name)}
        assert manifest["duplicate_groups"][domain] == {"groups": 7, "rows": 20}
        assert manifest["outputs"][f"{domain}.test.jsonl"]["labels"] == {"0": 15, "1": 15}
    for name, entry in manifest["outputs"].items():
        assert entry["sha256"] == sha(out / name) and entry["rows"] == len(_read(out / name)), name


def test_missing_input_names_the_file_and_writes_nothing(data_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "books.train.jsonl").write_bytes((data_dir / "books.train.jsonl").read_bytes())
    with pytest.raises(AdaptError, match=r"missing Amazon input file .*dvd\.train\.jsonl.*<data_dir>/dvd\.train\.jsonl"):
        carve.carve_dir(partial, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_to_write_over_its_inputs(data_dir):
    with pytest.raises(AdaptError, match="would overwrite the inputs"):
        carve.carve_dir(data_dir, data_dir)


def test_cli_prints_one_line_per_file(data_dir, tmp_path, capsys):
    assert carve_command.main(["--data-dir", str(data_dir), "--out", str(tmp_path), "--domains", "books,kitchen"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'books.train.jsonl'}\t80 rows\tlabels 0: 40, 1: 40"
    assert len(lines) == 7 and lines[-1].startswith(f"{tmp_path / 'carve.json'}")
    assert carve_command.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "error: missing Amazon input file" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# The recipe scheme.


def test_scheme_reads_the_cached_carve(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(carve.DATA_DIR_ENV, str(data_dir))
    monkeypatch.setenv("ADAPT_CACHE", str(tmp_path))
    ds, sha = read_spec("amazon:kitchen/test", "data.target.test")
    (folder,) = tmp_path.glob(f"amazon-carve-{carve.CARVE_VERSION}-*")
    assert len(folder.name.rsplit("-", 1)[1]) == 12
    assert sha == hashlib.sha256((folder / "kitchen.test.jsonl").read_bytes()).hexdigest()
    assert len(ds) == 200 and Counter(ds["label"]) == {0: 100, 1: 100} and set(ds["domain"]) == {"kitchen"}
    stamp = (folder / "carve.json").stat().st_mtime_ns
    assert read_spec("amazon:kitchen/test", "data.target.test")[1] == sha
    assert (folder / "carve.json").stat().st_mtime_ns == stamp  # reused, not carved again
    unlabeled, _ = read_spec("amazon:books/unlabeled", "data.target.unlabeled")
    assert len(unlabeled) == 30


def test_recipe_with_the_scheme_loads_its_splits(data_dir, tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv(carve.DATA_DIR_ENV, str(data_dir))
    data = {"label_names": ["negative", "positive"],
            "source": {"train": "amazon:books/train", "dev": "amazon:books/dev", "test": "amazon:books/test",
                       "domain": "books"},
            "target": {"unlabeled": "amazon:kitchen/unlabeled", "test": "amazon:kitchen/test", "domain": "kitchen"}}
    path = tmp_path / "amazon.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    recipe = load_recipe(path)
    assert recipe.data.source.train == "amazon:books/train"  # a scheme, not a path relative to the recipe
    assert spec_problems(recipe) == []
    splits, names = load_splits(recipe)
    assert names == ["negative", "positive"]
    assert {n: len(s.dataset) for n, s in splits.items()} == {
        "source_train": 80, "source_dev": 200, "source_test": 200, "target_unlabeled": 30, "target_test": 200}


@pytest.mark.parametrize(("spec", "message"), [
    ("amazon:movies/train", r"unknown Amazon split 'amazon:movies/train'; use amazon:<domain>/<split> with domain one of books"),
    ("amazon:books/validation", r"unknown Amazon split .*split one of train, dev, test, unlabeled$"),
    ("amazon:books", r"unknown Amazon split"),
])
def test_scheme_rejects_unknown_domains_and_splits(spec, message, data_dir, monkeypatch):
    monkeypatch.setenv(carve.DATA_DIR_ENV, str(data_dir))
    with pytest.raises(AdaptError, match=f"^`data.source.test`: {message}"):
        read_spec(spec, "data.source.test")
    recipe = load_recipe(None, [f"data.source.train={spec}", "data.source.test=amazon:books/test",
                                "data.target.test=amazon:dvd/test"])
    assert [p for p in spec_problems(recipe) if "unknown Amazon split" in p] != []


def test_scheme_without_the_data_folder_says_how_to_set_it(tmp_path, monkeypatch):
    monkeypatch.delenv(carve.DATA_DIR_ENV, raising=False)
    with pytest.raises(AdaptError, match=r"set ADAPT_AMAZON_DIR=.*or write the carve with `python -m adapt.carve"):
        read_spec("amazon:books/train", "data.source.train")
    monkeypatch.setenv(carve.DATA_DIR_ENV, str(tmp_path))  # a folder without the data
    recipe = load_recipe(None, ["data.source.train=amazon:books/train", "data.source.test=amazon:books/test",
                                "data.target.test=amazon:dvd/test"])
    problems = spec_problems(recipe)
    assert len(problems) == 3 and all("missing Amazon input file" in p for p in problems)
    assert problems[0].startswith("`data.source.train` (amazon:books/train): ")
