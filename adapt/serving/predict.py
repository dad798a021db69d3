"""Prediction for new text: read examples (.jsonl, .csv, plain text or stdin), predict, write JSON lines
(see `adapt predict --help` for the formats)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_text

STDIO = "-"


class Examples(NamedTuple):
    texts: list[str]
    ids: list[object | None]  # None where the input row has no id


# ----------------------------------------------------------------------------------------------------------
# Reading input.


def _text_of(row: dict, column: str, where: str) -> str:
    if column not in row:
        raise AdaptError(f"{where} has no `{column}` column; its columns are {sorted(row)}. "
                         "Choose the text column with --text-column")
    text = row[column]
    if not isinstance(text, str):
        raise AdaptError(f"{where}: `{column}` must be a string, got {type(text).__name__} {json.dumps(text)}")
    return text


def parse_jsonl(lines: list[str], column: str, name: str) -> Examples:
    texts, ids = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AdaptError(f"{name} line {n} is not valid JSON ({err.msg}): {line.strip()[:80]!r}") from None
        if not isinstance(row, dict):
            raise AdaptError(f"{name} line {n} is not a JSON object: {line.strip()[:80]!r}")
        texts.append(_text_of(row, column, f"{name} line {n}"))
        ids.append(row.get("id"))
    return Examples(texts, ids)


def parse_csv(content: str, column: str, name: str) -> Examples:
    reader = csv.DictReader(io.StringIO(content))
    if reader.fieldnames is None:
        return Examples([], [])
    if column not in reader.fieldnames:
        raise AdaptError(f"{name} has no `{column}` column; its columns are {reader.fieldnames}. "
                         "Choose the text column with --text-column")
    texts, ids = [], []
    for row in reader:
        # A row with fewer cells than the header leaves the text as None (DictReader's `restval`).
        texts.append(_text_of(row, column, f"{name} line {reader.line_num}"))
        ids.append(row.get("id"))
    return Examples(texts, ids)


def parse_plain(lines: list[str]) -> Examples:
    texts = [line for line in lines if line.strip()]
    return Examples(texts, [None] * len(texts))


def _looks_like_jsonl(lines: list[str]) -> bool:
    first = next((line for line in lines if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _read_text(path: str) -> str:
    try:
        if path == STDIO:
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8-sig")  # -sig: spreadsheet CSVs often start with a BOM
    except FileNotFoundError:
        raise AdaptError(f"--input {path} not found") from None
    except IsADirectoryError:
        raise AdaptError(f"--input {path} is a directory; give a .jsonl, .csv or text file") from None
    except UnicodeDecodeError as err:
        raise AdaptError(f"--input {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_examples(path: str, column: str) -> Examples:
    """The input's texts and ids, by format; every problem is an `AdaptError` naming the line."""
    suffix = "" if path == STDIO else Path(path).suffix.lower()
    if suffix in (".json", ".parquet"):
        raise AdaptError(f"--input {path}: {suffix} is not supported; use .jsonl (one object per line), .csv or "
                         "plain text")
    content = _read_text(path)
    name = "stdin" if path == STDIO else path
    lines = content.splitlines()
    if suffix == ".csv":
        examples = parse_csv(content, column, name)
    elif suffix in (".jsonl", ".ndjson") or (path == STDIO and _looks_like_jsonl(lines)):
        examples = parse_jsonl(lines, column, name)
    else:
        examples = parse_plain(lines)
    if not examples.texts:
        raise AdaptError(f"--input {name} holds no examples")
    return examples


# ----------------------------------------------------------------------------------------------------------
# Writing output.


def check_output(path: str) -> None:
    """Fail before the model loads on an --output that can never be written."""
    if path == STDIO:
        return
    out = Path(path)
    if out.is_dir():
        raise AdaptError(f"--output {path} is a directory; give a file path (or - for stdout)")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise AdaptError(f"--output {path}: {parent} is a file, not a directory")


def output_rows(examples: Examples, probs: np.ndarray, labels: list[str]) -> list[dict]:
    rows = []
    for ident, p in zip(examples.ids, probs):
        row = {} if ident is None else {"id": ident}
        row["label"] = labels[int(p.argmax())]
        row["probs"] = {name: round(float(x), 6) for name, x in zip(labels, p)}
        rows.append(row)
    return rows


def write_output(path: str, rows: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path == STDIO:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        atomic_write_text(Path(path), text)
    except OSError as err:
        raise AdaptError(f"cannot write --output {path}: {err.strerror or err}") from None


def predict(run_dir: Path, input_path: str, output_path: str, text_column: str = "text", batch_size: int = 64,
            max_length: int | None = None) -> int:
    """Predict every example of `input_path` into `output_path`; returns the number of examples."""
    from adapt.serving.inference import load_for_inference, predict_texts, resolve_model_dir

    check_output(output_path)
    resolve_model_dir(run_dir)  # a bad RUN_DIR is reported before the input is read
    examples = read_examples(input_path, text_column)
    loaded = load_for_inference(run_dir)
    limit = loaded.tokenizer.model_max_length
    if max_length is not None and max_length > limit:
        raise AdaptError(f"--max-length {max_length} is more than this model takes ({limit} tokens)")
    length = max_length or loaded.data_cfg.max_length
    probs = predict_texts(loaded.model, loaded.tokenizer, examples.texts, length, loaded.data_cfg.truncation,
                          batch_size, loaded.data_cfg.normalize)
    write_output(output_path, output_rows(examples, probs, loaded.label_names))
    return len(examples.texts)
