"""Predict labels for new text with a trained run or an exported model.

    adapt predict RUN_DIR --input reviews.jsonl --output predictions.jsonl
    python -m adapt.predict RUN_DIR --input reviews.jsonl --output predictions.jsonl     # the same
    cat reviews.txt | python -m adapt.predict runs/exported --input - --output -
    python -m adapt.predict someone/books-to-kitchen --input reviews.jsonl --output -

RUN_DIR is a run directory (its `model/`, tokenised with the recipe's `data.max_length` and `data.truncation`), a
model folder (a run's `model/`, full model or LoRA adapter; a folder written by `adapt.export`, an `--onnx` one
served through onnxruntime; a folder pushed by `adapt.hub push`, or written by its `--dry-run`, tokenised with the
`recipe.yaml` it carries), or the Hub id `user/name` of a model pushed by `adapt.hub` (adapter or full model) or of
any text classifier. A Hub model is downloaded to the Hugging Face cache; offline, only a copy already there is
used. An adapter loads its base model by the id it records (the embedded all-MiniLM-L6-v2 needs no download).

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
import sys
import time
from pathlib import Path

from adapt.core.cli import cli_entry, parser, positive_int, quiet_libraries

STDIO = "-"


def make_parser(prog: str = "python -m adapt.predict") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a run directory, a model folder (also a pushed one) or a Hub model id user/name")
    p.add_argument("--input", required=True, metavar="FILE", help=".jsonl, .csv or plain text; - for stdin")
    p.add_argument("--output", required=True, metavar="FILE", help="JSON lines; - for stdout")
    p.add_argument("--text-column", default="text", help="text column of .jsonl/.csv input (default: text)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="examples per batch (default: 64)")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="tokens per example (default: the recipe's data.max_length, else 256)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    from adapt.serving.predict import predict

    start = time.perf_counter()
    n = predict(args.run_dir, args.input, args.output, args.text_column, args.batch_size, args.max_length)
    # stdout may carry the predictions themselves, so the summary goes to stderr.
    where = "stdout" if args.output == STDIO else args.output
    print(f"predicted {n} examples in {time.perf_counter() - start:.1f} s -> {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
