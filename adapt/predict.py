"""Predict labels for new text with a trained run or an exported model.

    python -m adapt.predict RUN_DIR --input reviews.jsonl --output predictions.jsonl
    cat reviews.txt | python -m adapt.predict runs/exported --input - --output -
    python -m adapt.predict someone/books-to-kitchen --input reviews.jsonl --output -

RUN_DIR is a run directory (its `model/`, tokenised with the recipe's `data.max_length` and `data.truncation`), a
model folder (a run's `model/`, full model or LoRA adapter; a folder written by `adapt.export`; a folder pushed by
`adapt.hub push`, or written by its `--dry-run`, tokenised with the `recipe.yaml` it carries), or the Hub id
`user/name` of a model pushed by `adapt.hub` (adapter or full model) or of any text classifier. A Hub model is
downloaded to the Hugging Face cache; offline, only a copy already there is used. An adapter loads its base model
by the id it records (the embedded all-MiniLM-L6-v2 needs no download).

Input (`--input`, `-` for stdin):
  .jsonl  one JSON object per line; the text is in `--text-column` (default `text`), an `id` field is kept
  .csv    a header row; the same columns
  other   plain text, one example per non-empty line. Stdin is read as plain text unless its first non-empty
          line is a JSON object, in which case it is read as JSON lines.

Output (`--output`, `-` for stdout): one JSON line per input example, in input order:
  {"id": "r1", "label": "positive", "probs": {"negative": 0.03, "positive": 0.97}}
`id` only when the input has one; `probs` maps every label name, in label-index order, to its probability
(rounded to 6 decimals). A file is written atomically: it appears complete or not at all.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from adapt.errors import AdaptError, cli_entry, quiet_libraries
from adapt.rundir import atomic_write_text

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


# ----------------------------------------------------------------------------------------------------------
# Command line.


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adapt.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a run directory, a model folder (also a pushed one) or a Hub model id user/name")
    p.add_argument("--input", required=True, metavar="FILE", help=".jsonl, .csv or plain text; - for stdin")
    p.add_argument("--output", required=True, metavar="FILE", help="JSON lines; - for stdout")
    p.add_argument("--text-column", default="text", help="text column of .jsonl/.csv input (default: text)")
    p.add_argument("--batch-size", type=_positive, default=64, help="examples per batch (default: 64)")
    p.add_argument("--max-length", type=_positive, default=None,
                   help="tokens per example (default: the recipe's data.max_length, else 256)")
    return p


def predict(run_dir: Path, input_path: str, output_path: str, text_column: str = "text", batch_size: int = 64,
            max_length: int | None = None) -> int:
    """Predict every example of `input_path` into `output_path`; returns the number of examples."""
    from adapt.inference import load_for_inference, predict_texts, resolve_model_dir

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


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    start = time.perf_counter()
    n = predict(args.run_dir, args.input, args.output, args.text_column, args.batch_size, args.max_length)
    # stdout may carry the predictions themselves, so the summary goes to stderr.
    where = "stdout" if args.output == STDIO else args.output
    print(f"predicted {n} examples in {time.perf_counter() - start:.1f} s -> {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
