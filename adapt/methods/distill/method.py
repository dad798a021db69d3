"""`distill`'s training side: the teachers' probabilities (computed once, kept in `<run>/teacher/`) and the loss.

The teachers predict with their own tokenizers and tokenisation settings (`adapt.serving.inference`), so a teacher
may use another tokenizer than the student. Their probabilities are computed when the phase starts, for every
distillation text and every labelled test split (each process predicts a share of the texts), and written before
the first step; a resumed run reads them back from the checkpoint's copy of `teacher/` instead of computing them
again (the teacher may have changed since).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from datasets import Dataset, concatenate_datasets
from safetensors.torch import load_file, save_file

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json, read_jsonl, replace_dir
from adapt.data.features import MODEL_INPUTS
from adapt.methods.base import BaseMethod, LossOutput, MethodContext, Phase, StepInfo
from adapt.methods.main_process import on_every_process, on_main_process
from adapt.methods.source_only.method import labeled_training_data
from adapt.model.finetune import count_parameters
from adapt.model.heads import classifier_of, concat_batches
from adapt.model.weights import files_sha256

TEACHER_DIR = "teacher"
PROBS, INFO = "probs.safetensors", "teacher.json"
SPLIT_OF = {"target": "target_unlabeled", "source": "source_train"}  # `method.distill.texts` -> the texts
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# ----------------------------------------------------------------------------------------------------------
# The loss.


def tempered(probs: np.ndarray | torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / T) from p = softmax(z): log p = z - logsumexp(z), and the constant cancels in the softmax.
    In float64, with p floored at 1e-30: a float32 probability that underflowed to 0 would give -inf."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    return torch.softmax(p.clamp_min(1e-30).log() / temperature, dim=-1)


def ensemble(member_probs: list[np.ndarray], temperature: float) -> torch.Tensor:
    """The teachers' probabilities at temperature T, averaged (an ensemble's soft targets)."""
    return torch.stack([tempered(p, temperature) for p in member_probs]).mean(0)


def distillation_term(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher^T || p_student^T), averaged over the batch (Hinton et al. 2015).

    The gradient of KL at temperature T with respect to the student's logits is (q - p) / T; the T^2 makes it
    T * (q - p), so the term's gradients keep their size against the cross-entropy's as T changes."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    p = teacher_probs.to(log_q.dtype)
    kl = (torch.special.xlogy(p, p) - p * log_q).sum(-1).mean()  # xlogy: 0 * log 0 = 0
    return temperature**2 * kl


class TeacherTargets:
    """The teachers' soft targets for the distillation texts, by row; filled when the phase starts."""

    def __init__(self) -> None:
        self.probs: torch.Tensor | None = None

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        if self.probs is None:
            raise RuntimeError("the teachers' probabilities were not loaded before the first step")
        if self.probs.device != idx.device:
            self.probs = self.probs.to(idx.device)
        return self.probs[idx]


def distill_loss(alpha: float, temperature: float, pad_id: int, targets: TeacherTargets):
    """CE on the labelled batch + alpha * T^2 * KL on the distillation batch, in one forward pass."""

    def loss(model, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
        src, dis = batches["labeled"], batches["distill"]
        logits = model(**concat_batches(src, dis, pad_id)).logits.float()  # fp32 for the log-softmaxes
        n = src["input_ids"].shape[0]
        ce = F.cross_entropy(logits[:n], src["labels"])
        kd = distillation_term(logits[n:], targets.lookup(dis["idx"]), temperature)
        kl = kd.detach() / temperature**2
        return LossOutput(ce + alpha * kd, {"ce": ce.detach(), "kl": kl})

    return loss


# ----------------------------------------------------------------------------------------------------------
# Teachers: found and checked before the run directory is written, predicted when the phase starts.


def resolve_teachers(teachers: list[str], label_names: list[str]) -> list[tuple[str, Path]]:
    """(as given, model folder) for each teacher; a missing one, or one with other labels, is an `AdaptError`."""
    from adapt.serving.inference import label_names as teacher_labels
    from adapt.serving.inference import read_export_info, resolve_model_dir
    from adapt.serving.onnx import ONNX_FILE

    found = []
    for i, given in enumerate(teachers):
        key = f"`method.distill.teachers[{i}]`"
        try:
            model_dir, _ = resolve_model_dir(Path(given))
        except AdaptError as err:
            raise AdaptError(f"{key} = {given}: {err}") from None
        if (model_dir / ONNX_FILE).is_file():  # served by onnxruntime: no torch module to count or place
            raise AdaptError(f"{key} = {given}: {model_dir} is an ONNX export; give the run directory (or its model/ "
                             "folder) the export was made from: it predicts the same")
        if (read_export_info(model_dir) or {}).get("int8"):  # torch.ao's int8 kernels run on CPUs only
            raise AdaptError(f"{key} = {given}: {model_dir} is an int8 export, which runs on a CPU only and whose "
                             "probabilities are rounded; give the run directory (or its model/ folder) the export "
                             "was made from")
        labels = teacher_labels(model_dir)
        if labels != list(label_names):
            raise AdaptError(
                f"{key} = {given}: the teacher's labels {labels} are not this run's labels {list(label_names)} in the "
                "same order; a teacher's probabilities must mean the same classes. Use a teacher trained on these "
                "labels, or set `data.label_names` to the teacher's order")
        found.append((given, model_dir))
    return found


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def predict_member(given: str, model_dir: Path, texts: dict[str, list[str]], batch_size: int,
                   device: torch.device) -> tuple[dict[str, np.ndarray], dict]:
    """One teacher's probabilities (temperature 1) for each named list of texts, and its record; the distillation
    texts (`distill`) are timed for the report's throughput."""
    loaded, model, probs, seconds = predict_timed(model_dir, texts, batch_size, device)
    cfg = loaded.data_cfg
    files = weight_files(model_dir)
    record = {"teacher": given, "model_dir": str(model_dir), "labels": loaded.label_names,
              "params_total": count_parameters(model)[0], "weights_bytes": sum(f.stat().st_size for f in files),
              "weights_sha256": files_sha256(files), "max_length": cfg.max_length, "truncation": cfg.truncation,
              "normalize": cfg.normalize, "inference": speed(len(texts["distill"]), batch_size, seconds, device)}
    del model, loaded
    return probs, record


def predict_timed(model_dir: Path, texts: dict[str, list[str]], batch_size: int, device: torch.device):
    """A saved classifier loaded for inference (its own tokenizer and settings) and its probabilities for each named
    list of texts: (loaded, model on `device`, probabilities, seconds the `distill` texts took)."""
    from adapt.serving.inference import load_for_inference, predict_texts

    loaded = load_for_inference(model_dir)
    model = loaded.model.to(device)
    cfg = loaded.data_cfg
    probs, seconds = {}, 0.0
    for name, items in texts.items():
        start = time.perf_counter()
        probs[name] = predict_texts(model, loaded.tokenizer, items, cfg.max_length, cfg.truncation, batch_size,
                                    cfg.normalize)
        if name == "distill":
            seconds = time.perf_counter() - start
    return loaded, model, probs, seconds


def speed(texts: int, batch_size: int, seconds: float, device: torch.device) -> dict:
    return {"texts": texts, "batch_size": batch_size, "seconds": round(seconds, 3),
            "texts_per_second": texts / max(seconds, 1e-9), "device": str(device)}


# ----------------------------------------------------------------------------------------------------------
# The distillation data and the teacher file.


def distill_data(ctx: MethodContext, parts: list[str]) -> Dataset:
    """The tokenised distillation texts in `method.distill.texts` order, each row's `idx` its row in `<run>/teacher/`
    (the collator hands `idx` to the loss; the splits' own `idx` restart at 0 in each split, so a concatenation needs
    new ones)."""
    splits = [ctx.splits[SPLIT_OF[name]] for name in parts]
    cols = [c for c in (*MODEL_INPUTS, "length") if c in splits[0].column_names]
    data = concatenate_datasets([s.select_columns(cols) for s in splits])
    return data.add_column("idx", list(range(len(data))))


def _texts(ctx: MethodContext, parts: list[str]) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """The raw texts: the distillation texts (in `distill_data`'s order) and every labelled test split, with the
    test labels. The tokenised splits keep no text, so the splits are read again (the same, deterministic read)."""
    from adapt.data.splits import load_splits

    # The texts as given: each teacher applies its own `data.normalize` (`predict_texts`), and this run's rewriting
    # would come first otherwise. The rows and their order do not depend on it (the dev carve reads the labels only).
    raw, _ = load_splits(replace(ctx.recipe, data=replace(ctx.recipe.data, normalize="none")))
    distill = []
    for name in parts:
        split = SPLIT_OF[name]
        if len(raw[split].dataset) != len(ctx.splits[split]):
            raise AdaptError(f"{split} read {len(raw[split].dataset)} rows for the teachers but the run tokenised "
                             f"{len(ctx.splits[split])}; did the data change while the run started?")
        distill += raw[split].dataset["text"]
    tests = {n: s for n, s in raw.items() if s.labeled and n.endswith("_test")}
    texts = {"distill": distill, **{n: s.dataset["text"] for n, s in tests.items()}}
    return texts, {n: np.asarray(s.dataset["label"]) for n, s in tests.items()}


def write_teacher_file(ctx: MethodContext, parts: list[str], acc: Accelerator) -> None:
    """Predict with every teacher and write `<run>/teacher/` whole (a new folder renamed into place). Each process
    predicts its share of the texts and the main process writes the file: with the main process predicting them all,
    the others would wait in a collective, past NCCL's timeout for a large ensemble, with their devices idle."""
    cfg, start = ctx.recipe.method.distill, time.perf_counter()
    what = "computing the teachers' probabilities (`method.distill.teachers`)"
    rank, world = acc.process_index, acc.num_processes
    read = []  # the main process's read, kept: it reads once either way
    if world > 1:  # the main process reads first, so the others read `datasets`' cache it wrote
        on_main_process(acc, lambda: read.append(_texts(ctx, parts)), what)

    def predict_share() -> tuple[list, dict, dict]:
        teachers = resolve_teachers(cfg.teachers, labels_of(ctx.model))
        texts, labels = read[0] if read else _texts(ctx, parts)
        share = {name: items[rank::world] for name, items in texts.items()}
        members = [predict_member(given, d, share, ctx.recipe.eval.batch_size, acc.device) for given, d in teachers]
        return members, labels, {name: len(items) for name, items in texts.items()}

    shares = on_every_process(acc, predict_share, what)
    on_main_process(acc, lambda: _write_teacher_file(ctx, parts, shares, start), what)


def _interleave(pieces: list[np.ndarray], n: int, classes: int) -> np.ndarray:
    """Rows `r::len(pieces)` came from piece r (`items[rank::world]`): back in the texts' order."""
    out = np.empty((n, classes), dtype=np.float32)
    for r, piece in enumerate(pieces):
        if len(piece):  # a process with no row of a split returns an empty (0, 0) array
            out[r::len(pieces)] = piece
    return out


def _write_teacher_file(ctx: MethodContext, parts: list[str], shares: list[tuple[list, dict, dict]],
                        start: float) -> None:
    cfg, names = ctx.recipe.method.distill, labels_of(ctx.model)
    members, labels, counts = shares[0]
    by_process = [[member_probs for member_probs, _ in share_members] for share_members, _, _ in shares]
    probs = [{name: _interleave([teachers[i][name] for teachers in by_process], n, len(names))
              for name, n in counts.items()} for i in range(len(members))]
    # Each teacher's record is the main process's: its texts/s are one device's, on that process's share.
    records = [{**record, "processes": len(shares)} for _, record in members]
    tensors = {"distill": ensemble([m["distill"] for m in probs], cfg.temperature).float().contiguous()}
    accuracy = {}
    for name, y in labels.items():  # for the report only: the teachers' accuracy is never used to select anything
        p = ensemble([m[name] for m in probs], 1.0).float().contiguous()
        tensors[f"test/{name}"] = p
        accuracy[name] = float((p.argmax(-1).numpy() == y).mean()) if len(y) else None
    rows = {name: len(ctx.splits[SPLIT_OF[name]]) for name in parts}
    info = {"teachers": records, "label_names": names, "temperature": cfg.temperature, "texts": list(parts),
            "rows": rows, "n_rows": sum(rows.values()), "accuracy": accuracy,
            "seconds": round(time.perf_counter() - start, 3)}
    tmp = ctx.run.root / f".{TEACHER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / PROBS))
    atomic_write_json(tmp / INFO, info)
    replace_dir(tmp, ctx.run.root / TEACHER_DIR)


def read_teacher_file(run_root: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = run_root / TEACHER_DIR
    if not (folder / PROBS).is_file() or not (folder / INFO).is_file():
        raise AdaptError(f"{folder} is missing or incomplete, but the resumed run's checkpoint was written after it; "
                         "resume from another checkpoint (`train.resume=PATH`) or start again (`train.resume=never`)")
    return load_file(str(folder / PROBS)), json.loads((folder / INFO).read_text())


def labels_of(model: torch.nn.Module) -> list[str]:
    """The label names a classifier (or a model holding one) was built with, in index order."""
    config = classifier_of(model).config
    return [str(config.id2label[i]) for i in range(config.num_labels)]


class _Streams:
    """The phase's data, built when it starts: the teacher file first (written on a fresh start, read on a resume)."""

    def __init__(self, ctx: MethodContext, targets: TeacherTargets):
        self.ctx, self.targets = ctx, targets
        self.parts = list(ctx.recipe.method.distill.texts)

    def __call__(self, loop) -> dict[str, Dataset]:
        ctx, acc, state = self.ctx, loop.accelerator, loop.state
        fresh = state.step == 0 and state.epoch == 0 and state.batches_in_epoch == 0  # a resumed run has stepped
        if fresh:  # writes the file (replacing a folder a killed earlier run left behind); a resumed run has it
            write_teacher_file(ctx, self.parts, acc)
        tensors, info = read_teacher_file(ctx.run.root)
        data = distill_data(ctx, self.parts)
        if tensors["distill"].shape[0] != len(data) or info["texts"] != self.parts:
            raise AdaptError(f"{ctx.run.root / TEACHER_DIR} holds {tensors['distill'].shape[0]} rows of {info['texts']}, "
                             f"but this run distils on {len(data)} rows of {self.parts}; start again "
                             "(`train.resume=never`)")
        self.targets.probs = tensors["distill"].to(acc.device)
        return {"labeled": labeled_training_data(ctx), "distill": data}


# ----------------------------------------------------------------------------------------------------------
# The method.


class Distill(BaseMethod):
    # The teacher file is written once, before the first step; checkpoints keep it, so a resumed run distils from the
    # same probabilities even if a teacher folder was retrained since.
    run_dirs = (TEACHER_DIR,)

    def heads(self, recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        # No heads; this is the first hook that knows the run's labels, and it runs before the run directory is
        # written: a missing teacher or one with other labels stops the run with nothing written.
        if recipe.data.text_pair_column:
            raise AdaptError("`method.name=distill` does not support sentence pairs (`data.text_pair_column`) yet: "
                             "the teachers predict single texts (adapt.serving.inference.predict_texts)")
        # A run that has its teacher file already (a resumed one) reads it back and needs no teacher; a fresh start
        # over a killed run's folder checks the teachers again when it computes the file.
        if recipe.output_dir is None or not (Path(recipe.output_dir) / TEACHER_DIR / INFO).is_file():
            resolve_teachers(recipe.method.distill.teachers, labels_of(classifier))
        return {}

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.recipe.method.distill
        targets = TeacherTargets()
        loss = distill_loss(cfg.alpha, cfg.temperature, ctx.tokenizer.pad_token_id, targets)
        epochs = cfg.epochs if cfg.epochs is not None else ctx.recipe.train.epochs
        return [Phase("distill", _Streams(ctx, targets), loss, epochs=epochs)]

    def summary(self, ctx: MethodContext) -> dict:
        folder = ctx.run.root / TEACHER_DIR
        if not (folder / INFO).is_file():
            return {}
        tensors, info = read_teacher_file(ctx.run.root)
        cfg = ctx.recipe.method.distill
        members = info["teachers"]
        teacher = {"members": members, "params_total": sum(m["params_total"] for m in members),
                   "weights_bytes": sum(m["weights_bytes"] for m in members), "accuracy": info["accuracy"],
                   "inference": _ensemble_speed(members)}
        student = _student(ctx, tensors)
        timed = _student_speed(ctx, info)
        if timed is not None:
            student["inference"] = timed
        return {"temperature": cfg.temperature, "alpha": cfg.alpha, "rows": info["rows"], "teacher": teacher,
                "student": student, "teacher_seconds": info["seconds"]}


def _ensemble_speed(members: list[dict]) -> dict:
    """The ensemble predicts with every member in turn: its texts/s from the members' summed time."""
    first = members[0]["inference"]
    return {**first, **speed(first["texts"], first["batch_size"], sum(m["inference"]["seconds"] for m in members),
                             first["device"])}


def _student_speed(ctx: MethodContext, info: dict) -> dict | None:
    """The saved student timed exactly as each teacher was (`predict_member`: the same distillation texts, batch
    size, device and prediction function), so the report's two texts/s figures compare. Main process only; None
    on the others, or when the run saved no model."""
    if not ctx.run.model.is_dir() or not PartialState().is_main_process:
        return None
    texts, _ = _texts(ctx, info["texts"])
    # The teachers' device, batch size and share of the texts (the main process's), as they recorded them: the
    # student's parameters would name the same GPU with its index (`cuda:0` against the accelerator's `cuda`),
    # another name in the report for one device.
    first = info["teachers"][0]
    timed, share = first["inference"], texts["distill"][::first.get("processes", 1)]
    device, batch_size = torch.device(timed["device"]), timed["batch_size"]
    *_, seconds = predict_timed(ctx.run.model, {"distill": share}, batch_size, device)
    return speed(len(share), batch_size, seconds, device)


def _student(ctx: MethodContext, teacher: dict[str, torch.Tensor]) -> dict:
    """The student's size (its saved weights when model/ is there, else estimated), its test accuracy from the
    predictions files, and how often it predicts what the teacher predicts on target_test."""
    net = classifier_of(ctx.model)
    out: dict = {"params_total": count_parameters(net)[0]}
    model_dir = ctx.run.model
    files = weight_files(model_dir) if model_dir.is_dir() else []
    if files:
        out["weights_bytes"], out["weights_bytes_measured"] = sum(f.stat().st_size for f in files), True
    else:
        out["weights_bytes"] = sum(p.numel() * p.element_size() for p in net.parameters())
        out["weights_bytes_measured"] = False
    accuracy, preds = {}, {}
    for name in (k[len("test/"):] for k in teacher if k.startswith("test/")):
        rows = read_jsonl(ctx.run.predictions / f"{name}.jsonl")
        if rows:
            accuracy[name] = float(np.mean([r["pred"] == r["label"] for r in rows]))
            preds[name] = np.asarray([int(np.argmax(r["probs"])) for r in rows])
    out["accuracy"] = accuracy
    if "target_test" in preds and len(preds["target_test"]) == len(teacher["test/target_test"]):
        agree = preds["target_test"] == teacher["test/target_test"].argmax(-1).numpy()
        out["agreement_target_test"] = float(agree.mean())
    return out
