"""Push a finished run to the Hugging Face Hub.

    adapt push RUN_DIR --repo-id USER/NAME [--private] [--revision BRANCH] [--merged] [--license ID]
    adapt push RUN_DIR --repo-id USER/NAME --dry-run DIR      # write what would be uploaded, upload nothing
    python -m adapt.hub push ...                              # the same

A push uploads, in one commit: the model (a LoRA run's adapter + classifier head, or the full model; `--merged`
merges a LoRA run into its base model first, as `adapt export` does), the tokenizer, `report.md`, `report.json`,
`recipe.yaml` and a model card (`README.md`). An adapter names its base model by Hub id (e.g.
sentence-transformers/all-MiniLM-L6-v2) when the recipe did, never by this machine's path to it. `--dry-run DIR`
writes exactly that folder to DIR (new or empty) and uploads nothing; `adapt predict` and the loaders shown in
the card read it like the Hub repository.

The token comes from HF_TOKEN or `hf auth login` and is only ever handed to huggingface_hub: it is never written
to the run directory, the uploaded files or the output. `--private` applies when the repository is created; a
push with `--private` to an existing public repository is refused. `--revision BRANCH` commits to that branch,
creating it from `main` when needed. `hub.push: true` in a recipe pushes the same way at the end of training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser, quiet_libraries


def make_parser(prog: str = "python -m adapt.hub") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    commands = p.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="upload a finished run's model, reports and model card")
    push.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    push.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the Hub model repository")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created from main if needed)")
    push.add_argument("--merged", action="store_true", help="a LoRA run: upload the merged full model, not the adapter")
    push.add_argument("--license", metavar="ID", help="the card's licence (default: the base model's, when known)")
    push.add_argument("--dry-run", type=Path, metavar="DIR", help="write the folder that would be uploaded to DIR; upload nothing")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    from adapt.hub.push import push_run, warn_no_license, write_push_folder

    if args.dry_run is not None:
        folder = write_push_folder(args.run_dir, args.dry_run, repo_id=args.repo_id, merged=args.merged,
                                   license=args.license)
        kind = "adapter" if folder.adapter else "full model"
        print(f"wrote the {kind} upload for {args.repo_id} to {folder.path} ({len(folder.files)} files); nothing was uploaded")
        warn_no_license(folder.license)
        return 0
    url = push_run(args.run_dir, args.repo_id, private=args.private, revision=args.revision, merged=args.merged,
                   license=args.license)
    print(f"pushed {args.run_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
