"""The training loop: Adam with lr = lr0 · decay^epoch, random shifts, one test evaluation, one
metrics row and one checkpoint per epoch. `train(config)` is all a notebook or the CLI calls."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig, resume_conflicts
from .data import epoch_data, load_dataset, to_tensors
from .errors import CapslibError, RunFolderError, TrainingDiverged
from .evaluate import evaluate
from .files import atomic_path
from .model import build_model, count_parameters
from .provenance import provenance
from .runs import Run, checkpoint_to_resume, read_run, write_metrics, write_run_info
from .speed import (configure_backends, make_optimizer, make_train_step, prepare_images, prepare_model,
                    resolve_device, resolve_speed, set_lr)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The lr of `epoch` (counted from 0): lr · lr_decay^epoch, the seed study's 0.001 · 0.95^epoch."""
    return config.lr * config.lr_decay ** epoch


def train(config: TrainConfig, resume: bool = False, progress: bool = False, log=print) -> Run:
    """Train (or, with `resume`, continue) the run that `config` describes; return it, read back."""
    config.validate()
    device = resolve_device(config.device)
    path = resolve_speed(config.speed, device)
    ckpt_dir, log_dir = Path(config.ckpt_dir), config.log_dir
    resume_from = checkpoint_to_resume(ckpt_dir, log_dir, resume)
    saved = ckpt.load_checkpoint(resume_from) if resume_from else None
    if saved is not None:
        conflicts = resume_conflicts(TrainConfig.from_dict(saved["config"]), config)
        if conflicts:
            raise RunFolderError(f"{resume_from}: cannot resume with a different setup ({'; '.join(conflicts)})")
        if saved["epoch"] >= config.epochs:
            log(f"{ckpt_dir}: already trained for {saved['epoch']} epochs")
            return read_run(log_dir)
    data = load_dataset(config.dataset, config.data_root, config.verify_checksums,
                        config.train_subset, config.test_subset)
    if len(data.train_images) < config.batch_size:
        raise CapslibError(f"batch_size {config.batch_size} exceeds the {len(data.train_images)} training images")

    started = time.perf_counter()
    configure_backends(path)
    torch.manual_seed(config.seed)  # the same initial weights on every device
    model = prepare_model(build_model(config.model, config.routing_iterations, config.reconstruction,
                                      config.detach_routing).to(device), path)
    optimizer = make_optimizer(model, path, config.lr, device)
    history, start_epoch = [], 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        ckpt.load_optimizer_state(optimizer, saved["optimizer"])
        ckpt.set_rng_states(saved["rng"])
        history, start_epoch = saved["history"], saved["epoch"]
        log(f"resuming {ckpt_dir} after epoch {start_epoch}")

    # A run may span several processes (resumed on other machines): each adds one session record.
    sessions = _earlier_sessions(log_dir) if saved is not None else []
    info = {"config": config.to_dict(), "parameters": count_parameters(model), "speed_path": path.name,
            "train_images": len(data.train_images), "test_images": len(data.test_images),
            "sessions": sessions + [{**provenance(device), "start_epoch": start_epoch}], "status": "running"}
    write_run_info(log_dir, info)
    train_x, train_y = to_tensors(data.train_images, data.train_labels, device)
    test_x, test_y = to_tensors(data.test_images, data.test_labels, device)
    step = make_train_step(model, optimizer, path, device, config.batch_size)
    info["setup_seconds"] = round(time.perf_counter() - started, 2)
    log(f"{config.model} on {config.dataset} ({len(train_x)} train / {len(test_x)} test images), "
        f"{info['parameters']:,} parameters, {info['sessions'][-1]['device']}, speed path {path.name}")

    wall_before = history[-1]["wall_seconds"] if history else 0.0
    writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch + 1)
    try:
        for epoch in range(start_epoch, config.epochs):
            row = _run_epoch(step, model, optimizer, config, path, epoch, train_x, train_y, test_x, test_y, progress)
            row["wall_seconds"] = round(wall_before + time.perf_counter() - started, 2)
            if not all(math.isfinite(row[k]) for k in ("train_loss", "test_loss")):
                write_run_info(log_dir, {**info, "status": "diverged"})
                raise TrainingDiverged(
                    f"epoch {epoch + 1}: loss is {row['train_loss']} (train) / {row['test_loss']} (test); "
                    f"training stopped, the last good checkpoint ({ckpt_dir / ckpt.LAST}, epoch {epoch}) is kept")
            is_best = not history or row["test_accuracy"] > max(r["test_accuracy"] for r in history)
            history.append(row)
            _save(ckpt_dir, model, optimizer, epoch + 1, config, history, is_best)
            write_metrics(log_dir, history)
            _log_scalars(writer, row)
            log(_epoch_line(row, config.epochs))
    finally:
        writer.close()
    return _finish(log_dir, info, history, "complete")


def _run_epoch(step, model, optimizer, config, path, epoch, train_x, train_y, test_x, test_y, progress) -> dict:
    lr = learning_rate(config, epoch)
    set_lr(optimizer, lr)
    images, labels = epoch_data(train_x, train_y, config.seed, epoch, config.max_shift)
    images = prepare_images(images, path)
    steps, batch = len(images) // config.batch_size, config.batch_size  # the ragged last batch is dropped
    totals = torch.zeros(4, device=images.device)
    tic = time.perf_counter()
    for i in tqdm(range(steps), desc=f"epoch {epoch + 1}", leave=False, mininterval=1.0, disable=not progress):
        totals += step(images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch])
    loss, margin, recon, correct = totals.tolist()  # the epoch's only host sync
    seconds = time.perf_counter() - tic
    test = evaluate(model, test_x, test_y, config.eval_batch_size, path)
    has_margin, has_recon = test.margin_loss is not None, test.reconstruction_loss is not None
    return {
        "epoch": epoch + 1, "lr": lr,
        "train_loss": loss / steps,
        "train_margin_loss": margin / steps if has_margin else None,
        "train_reconstruction_loss": recon / steps if has_recon else None,
        "train_accuracy": correct / (steps * batch),
        "test_loss": test.loss, "test_margin_loss": test.margin_loss,
        "test_reconstruction_loss": test.reconstruction_loss,
        "test_accuracy": test.accuracy, "test_error": test.error_percent,
        "epoch_seconds": round(seconds, 3), "train_images_per_second": round(steps * batch / seconds, 1),
    }


def _save(ckpt_dir: Path, model, optimizer, epoch: int, config: TrainConfig, history: list, is_best: bool) -> None:
    last = ckpt_dir / ckpt.LAST
    ckpt.save_checkpoint(last, model, optimizer, epoch, config, history)
    if is_best:
        with atomic_path(ckpt_dir / ckpt.BEST) as tmp:
            shutil.copyfile(last, tmp)


def _log_scalars(writer: SummaryWriter, row: dict) -> None:
    for key, value in row.items():
        if key != "epoch" and value is not None:
            split, _, name = key.partition("_")
            writer.add_scalar(f"{split}/{name}" if split in ("train", "test") else key, value, row["epoch"])
    writer.flush()


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4f}  "
            f"train acc {row['train_accuracy']:.2%}  test acc {row['test_accuracy']:.2%}  "
            f"({row['epoch_seconds']:.1f} s, {row['train_images_per_second']:,.0f} img/s)")


def _earlier_sessions(log_dir: Path) -> list[dict]:
    try:
        return read_run(log_dir).info.get("sessions", [])
    except RunFolderError:
        return []


def _finish(log_dir: Path, info: dict, history: list, status: str) -> Run:
    summary = {}
    if history:
        best = max(history, key=lambda r: r["test_accuracy"])
        summary = {"epochs_done": history[-1]["epoch"], "final_test_error": history[-1]["test_error"],
                   "best_test_error": best["test_error"], "best_epoch": best["epoch"],
                   "wall_seconds": history[-1]["wall_seconds"]}
    write_run_info(log_dir, {**info, "status": status, "summary": summary})
    return read_run(log_dir)
