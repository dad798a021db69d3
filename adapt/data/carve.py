"""The fixed Amazon carve: train / dev / test splits cut once out of the labelled Amazon multi-domain reviews.

Only `<domain>.train.jsonl` (1,600 labelled reviews per domain) is available; the official test split is
withheld. Every benchmark uses this one carve, so its rules are fixed here and versioned:

* per domain, `n_dev` = 200 and `n_test` = 200 rows go to dev and test, the rest (1,200) to train;
* dev and test keep the domain's label proportions (largest remainder), which for Amazon's 800/800 is
  exactly 100/100;
* duplicates never straddle splits: reviews are grouped when they are identical after lower-casing and
  removing every non-letter (this subsumes whitespace and case differences), or when at least
  `NEAR_DUP_CONTAINMENT` of the shorter review's word 5-grams occur in the other (the same review with small
  edits, or one reviewer's template text); groups join transitively. As in the data's own holdout, only
  singleton reviews are eligible for dev and test, so every group stays whole in train;
* the eligible rows of each label are shuffled with `random.Random("<version>/<seed>/<domain>")` (in input
  order before the shuffle), and rows keep their input order and every field within each output file.

Bump `CARVE_VERSION` whenever the output changes: cached carves are keyed by it.

    python -m adapt.carve --data-dir /path/to/amazon_multidomain --out DIR [--domains books,kitchen]

Recipes name carved splits as `amazon:<domain>/<train|dev|test>` (and the untouched unlabelled text as
`amazon:<domain>/unlabeled`), with the data folder in the environment variable `ADAPT_AMAZON_DIR`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json, atomic_write_text

CARVE_VERSION = "v1"
CARVE_SEED = 20261125
DOMAINS = ("books", "dvd", "electronics", "kitchen")
SPLITS = ("train", "dev", "test")
SCHEME = "amazon:"
DATA_DIR_ENV = "ADAPT_AMAZON_DIR"

SHINGLE_WORDS = 5
NEAR_DUP_CONTAINMENT = 0.4  # on the real data, template reviews share 45-99%; unrelated pairs at most 25%
_MIN_SHARED_SHINGLES = 3
_COMMON_SHINGLE_ROWS = 20
_WORD = re.compile(r"[^\W\d_]+")  # runs of letters, any script

RULES = (
    "per label, dev/test quotas proportional to the domain's label counts (largest remainder); duplicate groups "
    "(same text after lower-casing and removing non-letters, or >= 40% of the shorter review's word 5-grams in the "
    "other; transitive) stay whole in train; only singleton reviews are eligible for dev/test, shuffled per label "
    "with random.Random('<version>/<seed>/<domain>')"
)


# ----------------------------------------------------------------------------------------------------------
# Duplicate groups.


def _letters(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalpha())


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}


def _near_pairs(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs of rows whose word 5-gram sets overlap by at least NEAR_DUP_CONTAINMENT of the smaller set."""
    sets = [_shingles(t) for t in texts]
    postings: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            postings[sh].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for rows in postings.values():
        # A 5-gram in many reviews is a stock phrase ("would not recommend this product"), not copying;
        # skipping those keeps candidate generation near-linear. Candidates are then scored on full sets.
        if 1 < len(rows) <= _COMMON_SHINGLE_ROWS:
            shared.update(itertools.combinations(rows, 2))
    return sorted(
        (a, b) for (a, b), n in shared.items()
        if n >= _MIN_SHARED_SHINGLES
        and len(sets[a] & sets[b]) >= NEAR_DUP_CONTAINMENT * min(len(sets[a]), len(sets[b]))
    )


def duplicate_groups(texts: Sequence[str]) -> list[list[int]]:
    """Groups (two or more row positions, sorted) of duplicate or near-duplicate texts, by first position."""
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)  # the smallest position is the root: groups order by first row

    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        union(first.setdefault(_letters(text), i), i)
    for a, b in _near_pairs(texts):
        union(a, b)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(texts)):
        members[find(i)].append(i)
    return [g for _, g in sorted(members.items()) if len(g) > 1]


# ----------------------------------------------------------------------------------------------------------
# Carving one domain.


def _label_order(label: Any) -> tuple[bool, Any]:
    return isinstance(label, str), label


def _quotas(counts: Counter, n: int) -> dict[Any, int]:
    """`n` rows shared out in proportion to `counts` (largest remainder; ties to the first label)."""
    total = sum(counts.values())
    exact = {label: n * c / total for label, c in counts.items()}
    out = {label: int(x) for label, x in exact.items()}
    by_remainder = sorted(sorted(counts, key=_label_order), key=lambda lab: out[lab] - exact[lab])
    for label in by_remainder[: n - sum(out.values())]:
        out[label] += 1
    return out


def _check_rows(rows: Sequence[dict]) -> None:
    if not rows:
        raise AdaptError("there are no rows to carve")
    for i, row in enumerate(rows):
        if not isinstance(row.get("text"), str) or row.get("label") is None:
            raise AdaptError(
                f"row {i} (id {row.get('id')!r}) needs a string `text` and a non-null `label` to be carved; got "
                f"text={str(row.get('text'))[:40]!r}, label={row.get('label')!r}"
            )


def _rng(seed: int, rows: Sequence[dict]) -> random.Random:
    # The domain is part of the seed so that domains of the same size do not get the same row positions.
    domains = {str(r.get("domain")) for r in rows}
    return random.Random(f"{CARVE_VERSION}/{seed}/{domains.pop() if len(domains) == 1 else ''}")


def _assign(rows: Sequence[dict], groups: list[list[int]], n_dev: int, n_test: int, seed: int) -> dict[str, list[dict]]:
    in_group = {i for g in groups for i in g}
    counts = Counter(r["label"] for r in rows)
    dev_quota, test_quota = _quotas(counts, n_dev), _quotas(counts, n_test)
    rng = _rng(seed, rows)
    side: dict[int, str] = {}
    for label in sorted(counts, key=_label_order):
        eligible = [i for i, r in enumerate(rows) if r["label"] == label and i not in in_group]
        n_d, n_t = dev_quota[label], test_quota[label]
        if len(eligible) < n_d + n_t:
            raise AdaptError(
                f"label {label!r} has {len(eligible)} reviews outside duplicate groups, fewer than the {n_d} dev + "
                f"{n_t} test it needs; carve smaller dev/test splits"
            )
        rng.shuffle(eligible)
        side.update(dict.fromkeys(eligible[:n_d], "dev"))
        side.update(dict.fromkeys(eligible[n_d:n_d + n_t], "test"))
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for i, row in enumerate(rows):
        out[side.get(i, "train")].append(row)
    return out


def carve_domain(rows: list[dict], *, n_dev: int = 200, n_test: int = 200, seed: int = CARVE_SEED) -> dict[str, list[dict]]:
    """Split one domain's labelled rows into `{"train", "dev", "test"}` (see the module docstring for the rules)."""
    _check_rows(rows)
    return _assign(rows, duplicate_groups([r["text"] for r in rows]), n_dev, n_test, seed)


# ----------------------------------------------------------------------------------------------------------
# Files.


def input_path(data_dir: Path, domain: str, kind: str = "train") -> Path:
    """`<data_dir>/<domain>.<kind>.jsonl`, which must exist."""
    path = Path(data_dir) / f"{domain}.{kind}.jsonl"
    if not path.is_file():
        raise AdaptError(
            f"missing Amazon input file {path}: expected `<data_dir>/{domain}.{kind}.jsonl`, JSON lines with "
            f"text, label, domain and id, in the amazon_multidomain folder (check --data-dir / {DATA_DIR_ENV})"
        )
    return path


def _read_rows(data: bytes, path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AdaptError(f"{path}:{n} is not valid JSON ({err}); expected one JSON object per line") from None
    return rows


def _jsonl(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _entry(rows: Sequence[dict], sha256: str) -> dict:
    labels = Counter(r["label"] for r in rows)
    return {"rows": len(rows), "labels": {str(k): labels[k] for k in sorted(labels, key=_label_order)}, "sha256": sha256}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def carve_dir(data_dir: Path, out_dir: Path, domains: Sequence[str] = DOMAINS, *, n_dev: int = 200,
              n_test: int = 200, seed: int = CARVE_SEED) -> dict:
    """Write `<out_dir>/<domain>.{train,dev,test}.jsonl` and `<out_dir>/carve.json`; return the manifest.

    Every input is checked before anything is written. Files are written atomically and carve.json last, so
    its presence marks a complete carve. The manifest holds file names, not paths, so the same inputs give
    byte-identical outputs wherever they live.
    """
    if Path(out_dir).resolve() == Path(data_dir).resolve():
        raise AdaptError(f"--out {out_dir} is the data folder: the carve's train files would overwrite the inputs; "
                         "choose another folder")
    paths = {domain: input_path(data_dir, domain) for domain in domains}
    manifest: dict[str, Any] = {"version": CARVE_VERSION, "seed": seed, "n_dev": n_dev, "n_test": n_test,
                                "rules": RULES, "inputs": {}, "duplicate_groups": {}, "outputs": {}}
    for domain, path in paths.items():
        data = path.read_bytes()
        rows = _read_rows(data, path)
        try:
            _check_rows(rows)
            groups = duplicate_groups([r["text"] for r in rows])
            parts = _assign(rows, groups, n_dev, n_test, seed)
        except AdaptError as err:
            raise AdaptError(f"{path}: {err}") from None
        manifest["inputs"][path.name] = _entry(rows, _sha256(data))
        manifest["duplicate_groups"][domain] = {"groups": len(groups), "rows": sum(map(len, groups))}
        for split, part in parts.items():
            text = _jsonl(part)
            atomic_write_text(Path(out_dir) / f"{domain}.{split}.jsonl", text)
            manifest["outputs"][f"{domain}.{split}.jsonl"] = _entry(part, _sha256(text.encode("utf-8")))
    atomic_write_json(Path(out_dir) / "carve.json", manifest)
    return manifest


def carved_path(data_dir: Path, domain: str, split: str, cache_dir: Path) -> Path:
    """Path of `<cache_dir>/amazon-carve-<VERSION>-<inputs sha256[:12]>/<domain>.<split>.jsonl`, carved if missing.

    The folder holds all four domains with the default sizes and seed. Keying it by the version and the
    inputs' hashes means a rule change or a changed input never reuses a stale carve.
    """
    if domain not in DOMAINS or split not in SPLITS:
        raise AdaptError(f"no carved Amazon split {domain!r}/{split!r}; domains: {', '.join(DOMAINS)}; splits: {', '.join(SPLITS)}")
    h = hashlib.sha256()
    for d in DOMAINS:
        h.update(f"{d}\0{_sha256(input_path(data_dir, d).read_bytes())}\n".encode())
    out = Path(cache_dir) / f"amazon-carve-{CARVE_VERSION}-{h.hexdigest()[:12]}"
    if not (out / "carve.json").is_file():
        carve_dir(data_dir, out)
    return out / f"{domain}.{split}.jsonl"


# ----------------------------------------------------------------------------------------------------------
# The `amazon:<domain>/<split>` recipe scheme.


def _parse_spec(spec: str, key: str) -> tuple[str, str]:
    domain, _, split = spec[len(SCHEME):].partition("/")
    if domain not in DOMAINS or split not in (*SPLITS, "unlabeled"):
        raise AdaptError(
            f"`{key}`: unknown Amazon split {spec!r}; use {SCHEME}<domain>/<split> with domain one of "
            f"{', '.join(DOMAINS)} and split one of {', '.join(SPLITS)}, unlabeled"
        )
    return domain, split


def _data_dir(spec: str, key: str) -> Path:
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        raise AdaptError(
            f"`{key}`: {spec} needs the Amazon data folder: set {DATA_DIR_ENV}=/path/to/amazon_multidomain (the folder "
            "with <domain>.train.jsonl), or write the carve with `python -m adapt.carve --data-dir DIR --out OUT` and "
            f"point `{key}` at a file in OUT"
        )
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise AdaptError(f"`{key}`: {DATA_DIR_ENV}={value} is not a directory; point it at the amazon_multidomain folder")
    return path


def spec_path(spec: str, key: str, cache_dir: Path) -> Path:
    """The local file an `amazon:<domain>/<split>` spec names, carving the data first if needed."""
    domain, split = _parse_spec(spec, key)
    data_dir = _data_dir(spec, key)
    try:
        if split == "unlabeled":  # not carved: the unlabelled text is the data folder's own file
            return input_path(data_dir, domain, "unlabeled")
        return carved_path(data_dir, domain, split, cache_dir)
    except AdaptError as err:
        raise AdaptError(f"`{key}` ({spec}): {err}") from None


def spec_problem(spec: str, key: str) -> str | None:
    """What is wrong with an `amazon:` spec, checked without reading or carving any data."""
    try:
        domain, split = _parse_spec(spec, key)
        data_dir = _data_dir(spec, key)
    except AdaptError as err:
        return str(err)
    kind = "unlabeled" if split == "unlabeled" else "train"
    try:
        for d in [domain] if kind == "unlabeled" else DOMAINS:  # a carve reads every domain's train file
            input_path(data_dir, d, kind)
    except AdaptError as err:
        return f"`{key}` ({spec}): {err}"
    return None
