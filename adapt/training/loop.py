"""The training loop: generic over methods (a method supplies phases, streams and a loss; the loop only loops).

It owns gradient accumulation, clipping, the schedule, logging, model selection on the dev split, early
stopping, checkpoints (periodic and on SIGTERM/SIGINT) and resuming from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from adapt.core.errors import AdaptError, RunInterrupted
from adapt.core.fileio import read_jsonl
from adapt.core.rundir import CHECKPOINT_PREFIX, RunDir
from adapt.data.features import Collator, train_loader
from adapt.data.splits import Split
from adapt.evaluation.label_free import CRITERIA, LOG_KEY, logged_values, selection_value
from adapt.evaluation.scoring import LabelFreeProbe, score_label_free, score_split
from adapt.methods.base import Phase, StepInfo
from adapt.recipe import Recipe
from adapt.training import checkpoint
from adapt.training.optim import build_optimizer, build_scheduler


@dataclass
class TrainState:
    """Everything the loop needs to continue exactly where a checkpoint left off."""

    phase: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the main stream consumed in the current epoch
    step: int = 0  # optimizer steps in the current phase
    global_step: int = 0  # optimizer steps over all phases
    best_value: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    last_eval_step: int = -1
    stopped_early: bool = False
    samples: int = 0  # training examples processed, over all processes
    real_tokens: int = 0  # non-padding tokens processed, over all processes
    padded_tokens: int = 0  # tokens including padding
    sum_len_sq: int = 0  # sum over sequences of length^2 (attention FLOPs grow with it)
    train_seconds: float = 0.0  # time in training steps (not evaluation or checkpoint writes)
    epochs_run: int = 0
    aux_batches: dict[str, int] = field(default_factory=dict)  # batches drawn from each auxiliary stream this phase

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """From a checkpoint's JSON: exactly these fields, numbers where numbers belong."""
        names = {f.name for f in dataclasses.fields(self)}
        if not isinstance(state, dict) or set(state) != names:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise AdaptError(f"a checkpoint's train_state.json must have the fields {sorted(names)}, got {got}")
        for k, v in state.items():
            ok = isinstance(v, dict) if k == "aux_batches" else v is None or isinstance(v, (int, float))
            if not ok:
                raise AdaptError(f"a checkpoint's train_state.json has {k}={v!r}")
            setattr(self, k, v)


@dataclass
class LoopContext:
    accelerator: Accelerator
    recipe: Recipe
    model: torch.nn.Module
    run: RunDir
    collate: Collator
    label_names: list[str]
    select_split: Split
    select_tokenized: Dataset
    state: TrainState = field(default_factory=TrainState)
    stop_requested: bool = False
    # L2-SP: (parameter, its value at the start) for the pretrained encoder weights that train.
    l2sp_anchors: list[tuple[torch.nn.Parameter, torch.Tensor]] = field(default_factory=list)
    # Folders of the run directory the method writes while training (`BaseMethod.run_dirs`), kept in checkpoints.
    run_dirs: tuple[str, ...] = ()
    # The unlabelled target sample the label-free criteria read at each selection evaluation (None: not computed).
    label_free: LabelFreeProbe | None = None
    # Calls the model itself asks for after every optimizer step, with the global step, before the gradients are
    # cleared (AdaLoRA's rank allocation: `adapt.model.peft_setup.per_step_calls`). Unlike `Phase.on_step`, which a
    # method sets per phase, these belong to the model and run in every phase.
    model_step_calls: list[Callable[[int], None]] = field(default_factory=list)
    # What those calls keep between steps, by name, saved in checkpoints and restored on resume (AdaLoRA's importance
    # estimates and rank allocation: `adapt.model.peft_setup.checkpointed_state`).
    model_extra_state: dict[str, checkpoint.ExtraState] = field(default_factory=dict)


class _StopSignals:
    """On SIGTERM/SIGINT, ask the loop to checkpoint and stop at the next optimizer step."""

    def __init__(self, ctx: LoopContext):
        self.ctx, self.previous = ctx, {}

    def __enter__(self) -> _StopSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.ctx.stop_requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _stop_agreed(ctx: LoopContext) -> bool:
    """Whether any process was asked to stop. With several processes all must agree, or DDP would hang; that
    agreement is a collective and a host sync, so it is reached every 10 steps rather than every step."""
    if ctx.accelerator.num_processes == 1:
        return ctx.stop_requested
    if ctx.state.global_step % 10:
        return False
    flag = torch.tensor([float(ctx.stop_requested)], device=ctx.accelerator.device)
    return bool(ctx.accelerator.reduce(flag, "max").item())


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and best weights.


def save_checkpoint(ctx: LoopContext, optimizer: torch.optim.Optimizer, scheduler) -> Path:
    """Everything that decides the rest of the run (`adapt.training.checkpoint`); complete or absent."""
    final = ctx.run.checkpoints / f"{CHECKPOINT_PREFIX}{ctx.state.global_step:08d}"
    # The best weights of the running phase are state too: restoring them at the phase's end decides its result.
    best = _best_file(ctx) if ctx.state.best_step is not None else None
    contents = checkpoint.Contents(
        ctx.accelerator.unwrap_model(ctx.model, keep_torch_compile=False), optimizer, scheduler,
        ctx.state.state_dict(), best, [ctx.run.root / d for d in ctx.run_dirs], ctx.run.train_log,
        ctx.model_extra_state)
    checkpoint.write_checkpoint(ctx.accelerator, final, contents)
    if ctx.accelerator.is_main_process:
        ctx.run.prune_checkpoints(ctx.recipe.train.keep_checkpoints)
    return final


def _trainable_state(ctx: LoopContext) -> dict[str, torch.Tensor]:
    net = ctx.accelerator.unwrap_model(ctx.model)
    return {n: p.detach().cpu().clone().contiguous() for n, p in net.named_parameters() if p.requires_grad}


def _best_file(ctx: LoopContext) -> Path:
    return ctx.run.best / "weights.safetensors"


def _save_best(ctx: LoopContext) -> None:
    # Only the trainable parameters change, so they are all that model selection needs to keep. Always a new file
    # renamed into place, never rewritten in place: checkpoints hold hard links to earlier versions.
    if ctx.accelerator.is_main_process:
        ctx.run.best.mkdir(parents=True, exist_ok=True)
        tmp = ctx.run.best / ".weights.tmp"
        save_file(_trainable_state(ctx), str(tmp))
        tmp.replace(_best_file(ctx))
    ctx.accelerator.wait_for_everyone()


def restore_best(ctx: LoopContext) -> None:
    """Load the running phase's best weights. The file is this phase's: it is removed when a phase starts and put
    back from the checkpoint when a run resumes."""
    path = _best_file(ctx)
    if ctx.state.best_step is None or not path.exists():
        return
    net = ctx.accelerator.unwrap_model(ctx.model)
    weights = load_file(str(path))
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n in weights:
                p.copy_(weights[n].to(p.device))


def log_record(ctx: LoopContext, record: dict) -> None:
    """A train_log.jsonl line (main process), also sent to the recipe's trackers (`report.trackers`)."""
    ctx.run.append_log(record)
    if ctx.recipe.report.trackers:
        values = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and k not in ("phase", "global_step")}
        ctx.accelerator.log(values, step=record["global_step"])


# ----------------------------------------------------------------------------------------------------------
# Evaluation during training.


def evaluate_selection(ctx: LoopContext) -> None:
    """Score the selection split; keep the best weights; count evaluations without improvement."""
    cfg, state = ctx.recipe, ctx.state
    if state.last_eval_step == state.global_step:  # an epoch ended on a step that was just evaluated
        return
    previous, state.last_eval_step = state.last_eval_step, state.global_step
    entry, _ = score_split(ctx.accelerator, ctx.model, ctx.select_split, ctx.select_tokenized, ctx.label_names,
                           cfg.eval.batch_size, ctx.collate, None)
    criteria = _label_free_criteria(ctx, previous)
    metric = entry[cfg.eval.selection_metric]
    value = _selection_value(cfg.eval.select_on, criteria) if cfg.eval.select_on in CRITERIA else metric
    improved = state.best_value is None or value > state.best_value
    if improved:
        state.best_value, state.best_step, state.evals_since_best = value, state.global_step, 0
        _save_best(ctx)
    else:
        state.evals_since_best += 1
    if ctx.accelerator.is_main_process:
        log_record(ctx, {"phase": state.phase, "global_step": state.global_step, "epoch": state.epoch,
                            f"{ctx.select_split.name}_{cfg.eval.selection_metric}": metric,
                            f"{ctx.select_split.name}_accuracy": entry["accuracy"], "best": improved,
                            **{f"label_free_{k}": v for k, v in criteria.items()}})
    patience = cfg.train.early_stopping_patience
    if patience is not None and state.evals_since_best >= patience:
        state.stopped_early = True


def _selection_value(name: str, criteria: dict[str, float]) -> float:
    """A label-free criterion flipped where lower is better, so that "improved" is always "higher". One the log
    cannot give yet (nothing logged so far) ranks below every measured value."""
    return selection_value(name, criteria[name]) if name in criteria else -math.inf


def _label_free_criteria(ctx: LoopContext, previous_eval: int) -> dict[str, float]:
    """The label-free criteria of the current weights (`adapt.evaluation.label_free`), the same on every process.
    Criteria read from the training log use this phase's values logged since the previous evaluation (or its last
    one, when none was logged since)."""
    if ctx.label_free is None:
        return {}
    shared = [None]
    if ctx.accelerator.is_main_process:  # the log is the main process's file
        log = [r for r in read_jsonl(ctx.run.train_log) if r.get("phase") == ctx.state.phase] \
            if ctx.run.train_log.exists() else []
        shared = [logged_values(log, LOG_KEY, previous_eval) or logged_values(log, LOG_KEY)[-1:]]
    if ctx.accelerator.num_processes > 1:
        broadcast_object_list(shared)
    return score_label_free(ctx.accelerator, ctx.model, ctx.label_free, ctx.recipe.eval.batch_size, ctx.collate,
                            shared[0])["criteria"]


# ----------------------------------------------------------------------------------------------------------
# One phase.


@dataclass
class _Logs:
    """Loss sums kept on the device; read back (a host sync) only when a log line is written."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0

    def add(self, loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        for k, v in {"loss": loss.detach(), **logs}.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.count += 1

    def flush(self, acc: Accelerator) -> dict[str, float]:
        out = {k: acc.reduce(v / self.count, "mean").item() for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


class _AuxStream:
    """An auxiliary stream, cycled for as long as the main one lasts, each pass in a new order. Its position (the
    batches drawn) lives in the train state, so a resumed run continues it instead of starting it over."""

    def __init__(self, ctx: LoopContext, name: str, loader):
        self.ctx, self.name, self.loader, self.it = ctx, name, loader, None

    def _start(self) -> None:
        drawn = self.ctx.state.aux_batches.get(self.name, 0)
        epoch, skip = divmod(drawn, len(self.loader))
        self.loader.set_epoch(epoch)
        loader = self.loader
        if skip:
            loader = self.ctx.accelerator.skip_first_batches(self.loader, skip)
            loader.set_epoch(epoch)
        self.it = iter(loader)

    def next(self) -> dict:
        if self.it is None:
            self._start()
        batch = next(self.it, None)
        if batch is None:  # end of a pass: the next one starts from the recorded position
            self._start()
            batch = next(self.it)
        self.ctx.state.aux_batches[self.name] = self.ctx.state.aux_batches.get(self.name, 0) + 1
        return batch


def l2sp_penalty(anchors: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> torch.Tensor:
    """||theta - theta_0||^2 summed over the anchored parameters."""
    return torch.stack([(p.float() - a).pow(2).sum() for p, a in anchors]).sum()


class PhaseRunner:
    def __init__(self, ctx: LoopContext, phase: Phase):
        self.ctx, self.phase = ctx, phase
        cfg, acc = ctx.recipe.train, ctx.accelerator
        streams = phase.streams(ctx) if callable(phase.streams) else phase.streams
        self.loaders = {
            name: train_loader(ds, cfg.batch_size, ctx.recipe.seed + i, cfg.group_by_length, ctx.collate, cfg.num_workers)
            for i, (name, ds) in enumerate(streams.items())
        }
        prepared = acc.prepare(*self.loaders.values())
        self.loaders = dict(zip(self.loaders, prepared if len(self.loaders) > 1 else [prepared]))
        self.main = next(iter(self.loaders))
        # The other streams are cycled alongside the main one (nothing is read until the first step).
        self.aux = {n: _AuxStream(ctx, n, dl) for n, dl in self.loaders.items() if n != self.main}
        self.batches_per_epoch = len(self.loaders[self.main])
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        if phase.max_steps is not None:  # a step budget: as many passes as it takes
            self.total_steps, self.epochs = phase.max_steps, math.ceil(phase.max_steps / self.steps_per_epoch)
        else:
            self.total_steps, self.epochs = self.steps_per_epoch * phase.epochs, phase.epochs
        if phase.lr is not None:
            cfg = dataclasses.replace(cfg, lr=phase.lr)
        heads = getattr(acc.unwrap_model(ctx.model), "heads", {})
        own_lr: dict[float, list[torch.nn.Parameter]] = {}
        for name, lr in (phase.head_lr or {}).items():
            if name in heads:  # two heads may share a rate
                own_lr.setdefault(lr, []).extend(heads[name].parameters())
        self.optimizer = acc.prepare(build_optimizer(ctx.model, cfg, own_lr))
        # Stepped by us once per optimizer step (not passed to prepare, which steps it once per process).
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.params = [p for p in ctx.model.parameters() if p.requires_grad]
        self.logs = _Logs()
        # Token counts stay on the device (no host sync per step) until folded into the state.
        self.token_sums = torch.zeros(3, dtype=torch.float64, device=acc.device)

    def _count_tokens(self, batch: dict) -> None:
        lengths = batch["attention_mask"].sum(dim=1, dtype=torch.float64)
        self.token_sums += torch.stack([lengths.sum(), lengths.new_tensor(batch["attention_mask"].numel()),
                                        (lengths * lengths).sum()])

    def _fold_tokens(self) -> None:
        """Add the device-side token counts of all processes to the state (a collective: call on every rank)."""
        real, padded, sq = (int(v) for v in self.ctx.accelerator.reduce(self.token_sums, "sum").tolist())
        state = self.ctx.state
        state.real_tokens, state.padded_tokens, state.sum_len_sq = (
            state.real_tokens + real, state.padded_tokens + padded, state.sum_len_sq + sq)
        self.token_sums.zero_()

    def _aux_batches(self) -> dict:
        return {n: stream.next() for n, stream in self.aux.items()}

    def _micro_step(self, batch: dict, window: int, sync: bool) -> None:
        ctx, acc = self.ctx, self.ctx.accelerator
        batches = {self.main: batch, **self._aux_batches()}
        # Skip DDP's gradient all-reduce on micro-batches that only accumulate.
        with contextlib.nullcontext() if sync else acc.no_sync(ctx.model):
            out = self.phase.loss(ctx.model, batches, StepInfo(ctx.state.step, self.total_steps))
            loss, logs = out.loss, out.logs
            if ctx.l2sp_anchors:
                penalty = l2sp_penalty(ctx.l2sp_anchors)
                loss, logs = loss + ctx.recipe.train.l2sp * penalty, {**logs, "l2sp_distance": penalty.detach()}
            # Divide by the micro-batches in this accumulation window so the summed gradient is a mean.
            acc.backward(loss / window)
        self.logs.add(loss, logs)
        self._count_tokens(batch)
        ctx.state.samples += batch["input_ids"].shape[0] * acc.num_processes

    def _optimizer_step(self) -> None:
        cfg = self.ctx.recipe.train
        if cfg.max_grad_norm is not None:
            self.ctx.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        for call in self.ctx.model_step_calls:
            call(self.ctx.state.global_step)
        if self.phase.on_step is not None:
            self.phase.on_step(self.ctx)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.state.step += 1
        self.ctx.state.global_step += 1

    def _after_step(self) -> bool:
        """Logging, evaluation, checkpoints, interrupts; returns True when the phase must stop."""
        ctx, cfg, state = self.ctx, self.ctx.recipe, self.ctx.state
        checkpoint = state.global_step % cfg.train.checkpoint_every_steps == 0
        if state.global_step % cfg.report.log_every_steps == 0 or checkpoint:
            self._fold_tokens()
        if state.global_step % cfg.report.log_every_steps == 0:
            values = self.logs.flush(ctx.accelerator)
            if ctx.accelerator.is_main_process:
                log_record(ctx, {"phase": state.phase, "phase_name": self.phase.name, "global_step": state.global_step,
                                    "epoch": round(state.step / self.steps_per_epoch, 4),
                                    "lr": self.scheduler.get_last_lr()[0], **values})
        if self.phase.select and cfg.train.eval_every_steps and state.step % cfg.train.eval_every_steps == 0:
            evaluate_selection(ctx)
        if checkpoint:
            save_checkpoint(ctx, self.optimizer, self.scheduler)
        if _stop_agreed(ctx):
            self._fold_tokens()
            path = save_checkpoint(ctx, self.optimizer, self.scheduler)
            raise RunInterrupted(
                f"interrupted at step {state.global_step}; checkpoint saved in {path}. Continue with the same command "
                f"and `output_dir={ctx.run.root}` (train.resume=auto)"
            )
        return self._done()

    def _done(self) -> bool:
        """Whether the phase ends with the step just taken: stopped early, its step budget or train.max_steps spent."""
        state, max_steps = self.ctx.state, self.ctx.recipe.train.max_steps
        budget_spent = self.phase.max_steps is not None and state.step >= self.total_steps
        return state.stopped_early or budget_spent or (max_steps is not None and state.global_step >= max_steps)

    def run_epoch(self, bar: tqdm) -> bool:
        """One pass over the main stream (or what is left of it after a resume); True when training must stop."""
        ctx, state, accum = self.ctx, self.ctx.state, self.ctx.recipe.train.grad_accum
        # Only a resumed run starts an epoch part-way, from a checkpoint written right after a step: first what
        # followed that step, which may have been the phase's last.
        if state.batches_in_epoch and self._done():
            return True
        # Through the prepared loader: Accelerate re-sets the sampler's epoch from its own iteration counter on
        # every pass, which after a resume would replay epoch 0's order.
        self.loaders[self.main].set_epoch(state.epoch)
        loader = self.loaders[self.main]
        if state.batches_in_epoch:
            loader = ctx.accelerator.skip_first_batches(loader, state.batches_in_epoch)
            loader.set_epoch(state.epoch)
        tick = time.perf_counter()
        for batch in loader:
            window_start = state.batches_in_epoch - state.batches_in_epoch % accum
            window = min(accum, self.batches_per_epoch - window_start)
            state.batches_in_epoch += 1
            sync = state.batches_in_epoch % accum == 0 or state.batches_in_epoch == self.batches_per_epoch
            self._micro_step(batch, window, sync)
            if not sync:
                continue
            self._optimizer_step()
            bar.update(1)
            state.train_seconds += time.perf_counter() - tick
            stop = self._after_step()
            tick = time.perf_counter()
            if stop:
                return True
        state.train_seconds += time.perf_counter() - tick
        return False

    def run(self) -> None:
        ctx, state = self.ctx, self.ctx.state
        # Dropout on, explicitly: `from_pretrained` returns a model in eval mode and evaluations put back the mode
        # they found, so the mode would otherwise depend on whether this process had evaluated yet (a resumed one
        # has not) and a classifier without heads would never train with dropout.
        ctx.model.train()
        bar = tqdm(total=self.total_steps, initial=state.step, desc=f"{self.phase.name}",
                   disable=not ctx.accelerator.is_local_main_process, dynamic_ncols=True)
        # Not `state.step < self.total_steps`: a checkpoint of the last step of an epoch-long phase resumes with its
        # epoch's end (evaluation, epoch count) still to do.
        while state.epoch < self.epochs:
            stop = self.run_epoch(bar)
            if not stop:  # a finished epoch: evaluate, then start the next one from its first batch
                state.epoch, state.batches_in_epoch, state.epochs_run = state.epoch + 1, 0, state.epochs_run + 1
            if self.phase.select and (not stop or state.best_step is None) and not state.stopped_early:
                evaluate_selection(ctx)
            if stop or state.stopped_early:
                break
        bar.close()
        self._fold_tokens()
        if self.phase.select:
            restore_best(ctx)
        if self.phase.after is not None:
            self.phase.after(ctx)


def _start_phase(ctx: LoopContext, index: int) -> None:
    """Reset the per-phase state; the previous phase's best weights are spent (restored at its end)."""
    state = ctx.state
    state.phase, state.epoch, state.batches_in_epoch, state.step, state.aux_batches = index, 0, 0, 0, {}
    state.best_value, state.best_step, state.evals_since_best, state.stopped_early = None, None, 0, False
    if ctx.accelerator.is_main_process:
        _best_file(ctx).unlink(missing_ok=True)
    ctx.accelerator.wait_for_everyone()


def _resume(ctx: LoopContext, path: Path) -> checkpoint.Checkpoint:
    """Check every file of the checkpoint, then take its train state and put the run directory back as it was."""
    saved = checkpoint.open_checkpoint(ctx.accelerator, path)
    try:  # every process reads the same file, so all of them stop here alike
        ctx.state.load_state_dict(saved.train_state)
    except AdaptError as err:
        raise AdaptError(f"checkpoint {path}: {err}; resume from another checkpoint (`train.resume=PATH`)") from None
    checkpoint.restore_run_files(ctx.accelerator, saved, _best_file(ctx), [ctx.run.root / d for d in ctx.run_dirs],
                                 ctx.run.train_log)
    return saved


def train(ctx: LoopContext, phases: list[Phase], resume_from: Path | None) -> TrainState:
    """Run the method's phases in order, continuing from `resume_from` when given."""
    acc, state = ctx.accelerator, ctx.state
    saved = _resume(ctx, resume_from) if resume_from is not None else None
    with _StopSignals(ctx):
        for index, phase in enumerate(phases):
            if index < state.phase:
                continue
            if index > state.phase:
                _start_phase(ctx, index)
            runner = PhaseRunner(ctx, phase)
            if saved is not None:  # the phase the checkpoint was written in, now built as it was then
                net = acc.unwrap_model(ctx.model, keep_torch_compile=False)
                checkpoint.load_training_state(acc, saved, net, runner.optimizer, runner.scheduler,
                                               ctx.model_extra_state)
                saved = None
            runner.run()
            # Let the finished phase's optimizer state be freed (Accelerate keeps every prepared optimizer).
            acc._optimizers.remove(runner.optimizer)
            if ctx.recipe.train.max_steps is not None and state.global_step >= ctx.recipe.train.max_steps:
                break
    return state
