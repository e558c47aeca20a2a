"""The training loop: Adam with the recipe's lr schedule and augmentation, an evaluation of the
validation split (if any) and the test set every `eval_every` epochs, one metrics row per evaluation,
checkpoints. `train(config)` is all a notebook or the CLI calls."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from . import checkpoint as ckpt
from .checkpoint import model_for
from .config import TrainConfig, resume_conflicts
from .data import load_dataset, to_tensors
from .datasets import dataset_info
from .errors import CapslibError, RunFolderError, TrainingDiverged
from .evaluate import evaluate_set
from .generated import epoch_examples, scored_sets
from .gpus import claim_device
from .layout import BEST, LAST, METRICS, RUN_INFO, placed
from .model import count_parameters
from .provenance import provenance
from .runs import (Run, check_logs_belong_to, epochs_text, finish_run, metrics_match, misses_rows, open_run_folder,
                   read_misses, read_run, selection, write_metrics, write_misses, write_run_info)
from .speed import configure_backends, make_optimizer, prepare_images, prepare_model, resolve_speed, set_lr
from .step import STATISTICS, make_train_step, named_statistics

# last.pt is rewritten at the first evaluation, then at most once a minute and after the last epoch:
# a checkpoint is ~100 MB (weights and Adam's moments), and a killed run loses at most a minute.
CHECKPOINT_SECONDS = 60.0


def learning_rate(config: TrainConfig, epoch: int, step: int = 0) -> float:
    """The lr of global step `step` in `epoch` (both counted from 0): lr · decay^epoch (the seed
    study's 0.001 · 0.95^epoch), or with lr_decay_steps lr · decay^(step / lr_decay_steps) (the
    official code's smooth 0.96 per 2,000 steps); never below min_lr."""
    exponent = epoch if config.lr_decay_steps is None else step / config.lr_decay_steps
    return max(config.lr * config.lr_decay ** exponent, config.min_lr)


def train(config: TrainConfig, resume: bool = False, progress: bool = False, log=print,
          deadline: float | None = None, stop: Callable[[], bool] | None = None) -> Run:
    """Train (or, with `resume`, continue) the run that `config` describes; return it, read back.

    With a `deadline` (a time.time() value), the run stops at the first evaluation after it, saves
    its checkpoint and is left 'stopped', to be resumed later: for time-limited jobs.

    `stop` is asked after every epoch: once it returns True the run saves its checkpoint and stops
    ('stopped') without waiting for the next evaluation. A scheduler's warning (Slurm's USR2 before a
    time limit or a preemption) gives seconds to minutes, and evaluations can be 50 epochs apart
    (MultiMNIST): stopping at the epoch in progress loses nothing, where a kill would lose the work
    since the last checkpoint."""
    config = placed(config).validate()  # without folders: runs/<run name> (layout.py)
    ckpt_dir, log_dir = Path(config.ckpt_dir), config.log_dir
    with open_run_folder(ckpt_dir, log_dir, resume) as resume_from:
        if resume and resume_from is None and (ckpt_dir / BEST).is_file():
            _check_restart_over(ckpt_dir / BEST, config, log)
        saved = ckpt.load_resumable(resume_from) if resume_from else None
        if saved is not None:
            check_logs_belong_to(log_dir, saved, resume_from)
            conflicts = resume_conflicts(TrainConfig.from_dict(saved["config"]), config)
            if conflicts:
                raise RunFolderError(f"{resume_from}: cannot resume with a different setup ({'; '.join(conflicts)})")
            if saved["epoch"] >= config.epochs:
                log(f"{ckpt_dir}: already trained for {epochs_text(saved['epoch'])}")
                info = _earlier_info(log_dir, saved, log)
                if info.get("status") == "complete" and metrics_match(log_dir, saved["history"]):
                    return read_run(log_dir)
                if (log_dir / METRICS).is_file() and not metrics_match(log_dir, saved["history"]):
                    log(f"{log_dir / METRICS} is not the history of {resume_from} (cut short?): rewritten from it")
                # killed between its last checkpoint and its final logs: finish them from the checkpoint
                return finish_run(log_dir, info, saved["history"], "complete")
        return _train(config, saved, progress, log, deadline, stop)


def _check_restart_over(best: Path, config: TrainConfig, log) -> None:
    """A run killed while it wrote its first last.pt leaves the best.pt written just before, and
    nothing to resume from: it starts again, and its first evaluation rewrites best.pt. Unless that
    best.pt is not this run's first evaluation (another setup's, or one of several evaluations): that
    is never overwritten."""
    saved = ckpt.load_checkpoint(best)
    conflicts = resume_conflicts(TrainConfig.from_dict(saved["config"]), config)
    if conflicts or len(saved["history"]) != 1:
        whose = f"another run ({conflicts[0]})" if conflicts else f"a run trained to epoch {saved['epoch']}"
        raise RunFolderError(f"{best.parent} holds the best.pt of {whose} but no last.pt to resume from; "
                             "move best.pt away to start this run there, or choose another folder")
    log(f"{best.parent}: the run was cut off before its first resumable checkpoint (best.pt of epoch "
        f"{saved['epoch']}, no last.pt): starting it again")


def _train(config: TrainConfig, saved: dict | None, progress: bool, log, deadline: float | None,
           stop: Callable[[], bool] | None) -> Run:
    """The loop, read top to bottom: set up (or restore) the run, then per epoch train, evaluate when an
    evaluation is due, let the record checkpoint what it holds, and ask whether to stop early."""
    ckpt_dir, log_dir = Path(config.ckpt_dir), config.log_dir
    data = load_dataset(config.dataset, config.data_root, config.verify_checksums,
                        config.train_subset, config.test_subset, config.validation_size)
    if len(data.train_images) < config.batch_size:
        raise CapslibError(f"batch_size {config.batch_size} exceeds the {len(data.train_images)} training images")
    device = claim_device(config.device, log)  # a GPU no other run of the study is using
    # on a CPU, --speed auto compiles only a run long enough to repay the compilation
    path = resolve_speed(config.speed, device, images=(config.epochs - (saved["epoch"] if saved else 0))
                         * len(data.train_images))

    started = time.perf_counter()
    configure_backends(path)
    torch.manual_seed(config.seed)  # the same initial weights on every device
    model = prepare_model(model_for(config).to(device), path)
    optimizer = make_optimizer(model, path, config.lr, device)
    history, start_epoch = [], 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        ckpt.load_optimizer_state(optimizer, saved["optimizer"])
        ckpt.set_rng_states(saved["rng"])
        history, start_epoch = saved["history"], saved["epoch"]
        log(f"resuming {ckpt_dir} after epoch {start_epoch}")

    # A run may span several processes (resumed on other machines): each adds one session record.
    sessions = _earlier_info(log_dir, saved, log).get("sessions", []) if saved is not None else []
    info = {"config": config.to_dict(), "variant": config.variant(), "parameters": count_parameters(model),
            "speed_path": path.name, "train_images": len(data.train_images), "test_images": len(data.test_images),
            "validation_images": config.validation_size,
            "sessions": sessions + [{**provenance(device), "start_epoch": start_epoch}], "status": "running"}
    write_run_info(log_dir, info)
    with _status_kept_true(log_dir, info):
        train_x, train_y = to_tensors(data.train_images, data.train_labels, device)
        scored = scored_sets(config, data, device)  # generated on the device for multimnist and mnist-expanded
        dataset = dataset_info(config.dataset)
        step = make_train_step(model, optimizer, path, device, config.batch_size, dataset.image_shape,
                               dataset.targets, dataset.reconstruction_shape)
        info["setup_seconds"] = round(time.perf_counter() - started, 2)
        log(f"{config.model} ({config.variant()}) on {config.dataset} ({len(train_x)} train / "
            f"{len(scored['validation']) if 'validation' in scored else 0} validation / {len(scored['test'])} test examples), "
            f"{info['parameters']:,} parameters, {info['sessions'][-1]['device']}, speed path {path.name}")

        wall_before = history[-1]["wall_seconds"] if history else 0.0
        record = _Record(config, model, optimizer, info, history, start_epoch,
                         _selected_misses(log_dir, history, config) if saved else None)
        stopping = _Stopping(stop, deadline)
        writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch + 1)
        try:
            for epoch in range(start_epoch, config.epochs):
                row = _train_epoch(step, optimizer, config, path, epoch, train_x, train_y, progress)
                done = epoch + 1
                if done % config.eval_every and done != config.epochs:
                    # asked to stop between evaluations: a checkpoint of this epoch, from which a resumed run
                    # continues as if never stopped; metrics.csv keeps its rows (evaluations only). An epoch
                    # whose loss is not finite is left to the next evaluation, which reports the divergence
                    # and keeps the last good checkpoint. (wall_seconds, kept with the evaluations, leaves out
                    # the time of the epochs after the last one.)
                    if stopping.reason(evaluated=False) is None or not math.isfinite(row["train_loss"]):
                        continue
                    record.save(done)
                    log(f"asked to stop after epoch {done}: checkpoint saved; resume to continue")
                    return finish_run(log_dir, info, history, "stopped")
                scores, misses = _evaluate(model, scored, config, path)
                row.update(scores)
                row["wall_seconds"] = round(wall_before + time.perf_counter() - started, 2)
                record.add_evaluation(row, misses)  # raises TrainingDiverged on a loss that is not finite
                why = stopping.reason(evaluated=True)
                if record.due(done) or why is not None:
                    record.save(done)
                _log_scalars(writer, row)
                log(_epoch_line(row, config.epochs))
                if why is not None and done < config.epochs:
                    log(f"{why} after epoch {done}: checkpoint saved; resume to continue")
                    return finish_run(log_dir, info, history, "stopped")
        finally:
            writer.close()
        return finish_run(log_dir, info, history, "complete")


class _Stopping:
    """What decides that a run stops before its last epoch: the caller's `stop`, asked once an epoch, and
    the deadline, looked at after an evaluation only (a run stops at the first evaluation after it)."""

    def __init__(self, stop: Callable[[], bool] | None, deadline: float | None):
        self.stop, self.deadline = stop, deadline

    def reason(self, evaluated: bool) -> str | None:
        """Why the run stops after this epoch ('asked to stop', 'time limit reached'), or None."""
        if self.stop is not None and self.stop():
            return "asked to stop"
        if evaluated and self.deadline is not None and time.time() >= self.deadline:
            return "time limit reached"
        return None


class _Record:
    """A training run's record and the files that hold it: the history of evaluations (one metrics row
    each), best.pt (the selected evaluation's weights), and, when saved, last.pt (everything resuming
    needs), metrics.csv and misses.csv.gz (the last evaluation's misses and the selected one's), in that
    order: the CSV never runs ahead of the checkpoint."""

    def __init__(self, config: TrainConfig, model, optimizer, info: dict, history: list[dict], start_epoch: int,
                 selected_misses: pd.DataFrame | None):
        self.config, self.model, self.optimizer, self.info, self.history = config, model, optimizer, info, history
        self.ckpt_dir, self.log_dir = Path(config.ckpt_dir), config.log_dir
        self.last_misses, self.selected_misses = None, selected_misses
        self.saved_at, self.saved_epoch = None, start_epoch  # time.monotonic() of the last save, its epoch

    def add_evaluation(self, row: dict, misses: dict) -> None:
        """Append an evaluation's row; write best.pt if it is the one to select. A loss that is not finite
        ends the run instead (run.json: diverged), keeping the last good checkpoint."""
        if not all(math.isfinite(row[k]) for k in ("train_loss", "test_loss")):
            write_run_info(self.log_dir, {**self.info, "status": "diverged"})
            kept = f"the last good checkpoint ({self.ckpt_dir / LAST}, epoch {self.saved_epoch}) is kept" \
                if (self.ckpt_dir / LAST).is_file() else "no checkpoint had been written yet"
            raise TrainingDiverged(f"epoch {row['epoch']}: loss is {row['train_loss']} (train) / {row['test_loss']} "
                                   f"(test); training stopped, {kept}")
        self.history.append(row)
        done = row["epoch"]
        self.last_misses = misses_rows("last", done, misses)
        if _is_best(self.history):
            ckpt.save_checkpoint(self.ckpt_dir / BEST, self.model, None, done, self.config, self.history,
                                 self.info["sessions"])
            if self.config.validation_size:
                self.selected_misses = misses_rows("selected", done, misses)

    def due(self, done: int) -> bool:
        """Whether last.pt is due after epoch `done`: at the first evaluation, then once CHECKPOINT_SECONDS
        have passed, and after the last epoch."""
        return (self.saved_at is None or time.monotonic() - self.saved_at >= CHECKPOINT_SECONDS
                or done == self.config.epochs)

    def save(self, done: int) -> None:
        """last.pt after epoch `done`, then the logs of the evaluations it holds."""
        ckpt.save_checkpoint(self.ckpt_dir / LAST, self.model, self.optimizer, done, self.config, self.history,
                             self.info["sessions"])
        write_metrics(self.log_dir, self.history)
        write_misses(self.log_dir, [m for m in (self.last_misses, self.selected_misses) if m is not None])
        self.saved_at, self.saved_epoch = time.monotonic(), done


@contextlib.contextmanager
def _status_kept_true(log_dir: Path, info: dict):
    """While the block runs, run.json says 'running'; whatever ends it early is recorded there, so
    that no run.json says 'running' after its process has stopped (but for kill -9, which nothing
    outlives): Ctrl-C or SIGTERM as 'interrupted', anything else as 'failed' with the error's line. A
    diverged run has said so itself. The checkpoint written last is kept, to resume from."""
    try:
        yield
    except TrainingDiverged:
        raise
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        ended = {**info, "status": status}
        if status == "failed":
            ended["error"] = (f"{type(err).__name__}: " + (str(err).splitlines() or [""])[0])[:300]
        with contextlib.suppress(CapslibError):  # a full disk must not hide the error that ended the run
            write_run_info(log_dir, ended)
        raise


def _train_epoch(step, optimizer, config, path, epoch, train_x, train_y, progress) -> dict:
    examples = epoch_examples(config, train_x, train_y, epoch)
    images, recon = prepare_images(examples.images, path), examples.reconstruction_targets
    steps, batch = len(images) // config.batch_size, config.batch_size  # the ragged last batch is dropped
    first_step = epoch * steps
    per_step = config.lr_decay_steps is not None
    lr = learning_rate(config, epoch, first_step)
    set_lr(optimizer, lr)
    totals = torch.zeros(len(STATISTICS), device=images.device)
    tic = time.perf_counter()
    for i in tqdm(range(steps), desc=f"epoch {epoch + 1}", leave=False, mininterval=1.0, disable=not progress):
        if per_step and i:
            set_lr(optimizer, learning_rate(config, epoch, first_step + i))
        part = slice(i * batch, (i + 1) * batch)
        totals += step(images[part], examples.labels[part], None if recon is None else recon[part])
    sums = named_statistics(totals)  # the epoch's only host sync
    seconds = time.perf_counter() - tic
    has_recon = config.model == "capsnet" and config.reconstruction
    return {
        "epoch": epoch + 1, "step": first_step + steps, "lr": lr,
        "train_loss": sums["loss"] / steps,
        "train_margin_loss": sums["margin_loss"] / steps if config.model == "capsnet" else None,
        "train_reconstruction_loss": sums["reconstruction_loss"] / steps if has_recon else None,
        "train_accuracy": sums["correct"] / (steps * batch),
        "epoch_seconds": round(seconds, 3), "train_images_per_second": round(steps * batch / seconds, 1),
    }


def _evaluate(model, scored: dict, config: TrainConfig, path) -> tuple[dict, dict]:
    """The validation, test (and affine) columns of a metrics row (None for a set the run lacks), and
    the misses of the test (and affine) sets (Evaluation.misses)."""
    row = {f"{split}_{k}": None for split in ("validation", "test") for k in ("loss", "accuracy", "error")}
    row.update(affine_accuracy=None, affine_error=None)
    misses = {}
    for split, examples in scored.items():
        result = evaluate_set(model, examples, config.eval_batch_size, path)
        if split != "validation":
            misses[split] = result.misses()
        row.update({f"{split}_accuracy": result.accuracy, f"{split}_error": result.error_percent})
        if split != "affine":  # the affine set is scored for accuracy alone
            row[f"{split}_loss"] = result.loss
        if split == "test":
            row.update(test_margin_loss=result.margin_loss, test_reconstruction_loss=result.reconstruction_loss)
    return row, misses


def _selected_misses(log_dir: Path, history: list[dict], config: TrainConfig):
    """The selected evaluation's misses as the run being resumed wrote them, if they are of the epoch
    its checkpoint selects (misses.csv.gz is written after last.pt: a run killed in between, or trained
    before runs recorded misses, has none to carry on; its misses file then lacks the selected rows)."""
    epoch = selection(pd.DataFrame(history))["selected_epoch"] if config.validation_size and history else None
    try:
        misses = read_misses(log_dir) if epoch is not None else None
    except CapslibError:
        return None
    if misses is None:
        return None
    chosen = misses[misses.evaluation == "selected"]
    return chosen if len(chosen) and (chosen.epoch == epoch).all() else None


def _is_best(history: list[dict]) -> bool:
    """Whether the newest evaluation is the one best.pt should hold: the run's selected checkpoint
    (lowest validation error, the latest of ties) or, without a validation split, the highest test
    accuracy so far (selected on the test set: for figures, never for reported errors)."""
    chosen = selection(pd.DataFrame(history))
    epoch = chosen["selected_epoch"] if chosen["selected_epoch"] is not None else chosen["best_epoch"]
    return epoch == history[-1]["epoch"]


def _log_scalars(writer: SummaryWriter, row: dict) -> None:
    for key, value in row.items():
        if key != "epoch" and value is not None:
            split, _, name = key.partition("_")
            writer.add_scalar(f"{split}/{name}" if split in ("train", "test", "validation") else key, value, row["epoch"])
    writer.flush()


def _epoch_line(row: dict, epochs: int) -> str:
    validation = f"val acc {row['validation_accuracy']:.2%}  " if row.get("validation_accuracy") is not None else ""
    affine = f"affine acc {row['affine_accuracy']:.2%}  " if row.get("affine_accuracy") is not None else ""
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4f}  "
            f"train acc {row['train_accuracy']:.2%}  {validation}test acc {row['test_accuracy']:.2%}  {affine}"
            f"({row['epoch_seconds']:.1f} s, {row['train_images_per_second']:,.0f} img/s)")


def _earlier_info(log_dir: Path, saved: dict, log) -> dict:
    """The run.json of the run being resumed, or one rebuilt from its checkpoint (check_logs_belong_to
    has made sure that the logs there are this run's, or none)."""
    try:
        info = json.loads((log_dir / RUN_INFO).read_text())
        TrainConfig.from_dict(info["config"])
        return info
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log(f"{log_dir / RUN_INFO} is unreadable ({type(err).__name__}): rebuilt from the checkpoint")
    return {"config": saved["config"], "variant": TrainConfig.from_dict(saved["config"]).variant(),
            "sessions": saved.get("sessions", [])}
