"""Run folders (layout.py says where they are and what they hold): locking them while a run trains,
writing its logs, and reading runs back. This module alone writes and reads run logs.

metrics.csv is rewritten whole, atomically, with last.pt, and the checkpoint holds the history too,
so a resumed run rewrites metrics.csv from it: the CSV never disagrees with the checkpoint it belongs to. While a run trains, it holds a lock on its folders, so
a second process can neither train into them nor resume them at the same time.

Three numbers describe a run, named plainly in every table:
    final     the test error after the last epoch
    selected  the test error of the evaluation with the lowest validation error (the latest of
              ties); only for runs with a validation split
    best      the lowest test error over all evaluations: selected on the test set, shown for
              comparison with the official evaluator only
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import TrainConfig, resume_conflicts
from .errors import RunFolderError
from .files import TEMPORARY_SUFFIX, atomic_path, atomic_write_text
from .layout import BEST, LAST, METRICS, MISSES, RUN_INFO, configuration_label

COLUMNS = ["epoch", "step", "lr", "train_loss", "train_margin_loss", "train_reconstruction_loss", "train_accuracy",
           "validation_loss", "validation_accuracy", "validation_error",
           "test_loss", "test_margin_loss", "test_reconstruction_loss", "test_accuracy", "test_error",
           "affine_accuracy", "affine_error",  # expanded MNIST only: the affNIST-style generated test set
           "epoch_seconds", "train_images_per_second", "wall_seconds"]
# misses.csv.gz: one row per example got wrong. set: test (or affine); evaluation: last (the latest logged:
# the final one of a finished run) or selected (lowest validation error: runs with a split only); index:
# the example's position in its set (MultiMNIST: the pair's index, generated.py); label, predicted: the
# classes (two labels: "3 7"). Paired comparisons of runs scored on the same set read it (analysis.py).
MISS_COLUMNS = ["set", "evaluation", "epoch", "index", "label", "predicted"]


def _entries(folder: Path) -> list[Path]:
    """What a folder holds, less the temporary files of an interrupted atomic write."""
    return [p for p in folder.iterdir() if not p.name.endswith(TEMPORARY_SUFFIX)] if folder.is_dir() else []


def _holds_only_a_start(folder: Path, ckpt_dir: Path) -> bool:
    """What a run writes before its first resumable checkpoint: run.json, TensorBoard events and, in
    the checkpoint folder, best.pt (written just before the first last.pt; train.py checks that it is
    this run's first evaluation before starting the run again over it)."""
    start = {RUN_INFO, BEST} if folder == ckpt_dir else {RUN_INFO}
    return all(p.name in start or p.name.startswith("events.out.tfevents") for p in _entries(folder))


@contextlib.contextmanager
def open_run_folder(ckpt_dir: Path, log_dir: Path, resume: bool):
    """Lock the run's folders for this process and yield the checkpoint to continue from (or None).

    A fresh start needs empty folders, so that nothing already written is overwritten; with
    `resume`, an existing last.pt is continued, and empty folders (or ones holding only the start
    of a run cut off before its first checkpoint) start a new run. Temporary files that a killed
    process left behind are removed (nobody else can be writing them: we hold the lock)."""
    ckpt_dir, log_dir = Path(ckpt_dir), Path(log_dir)
    with contextlib.ExitStack() as locks:
        for folder, flag in _folders(ckpt_dir, log_dir):
            locks.enter_context(_lock(folder, flag))
        for folder, _ in _folders(ckpt_dir, log_dir):
            for stale in folder.glob(f".*{TEMPORARY_SUFFIX}"):
                stale.unlink(missing_ok=True)
        yield _checkpoint_to_resume(ckpt_dir, log_dir, resume)


def _folders(ckpt_dir: Path, log_dir: Path) -> list[tuple[Path, str]]:
    same = ckpt_dir.resolve() == log_dir.resolve()
    # named as the command line and the notebooks (02_train's runs_dir, results_dir) call them
    return [(ckpt_dir, "--ckpt-dir (notebook: runs_dir)")] + ([] if same else [(log_dir, "--logs-dir (notebook: results_dir)")])


@contextlib.contextmanager
def _lock(folder: Path, flag: str):
    """An exclusive flock on the folder itself (no lock file to clutter it), released when the
    process ends, however it ends. A folder made here is removed again if the run fails before
    writing anything into it."""
    created, fd = not folder.exists(), None
    try:
        try:
            if not created and not folder.is_dir():
                raise RunFolderError(f"{flag} {folder} is a file, not a folder")
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise RunFolderError(f"{flag} {folder} is not writable")
            fd = os.open(folder, os.O_RDONLY)
        except OSError as err:
            raise RunFolderError(f"{flag} {folder}: cannot use it ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunFolderError(f"{flag} {folder} is in use by another training process; "
                                     "wait for it to finish or choose another folder") from None
            raise
        yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _checkpoint_to_resume(ckpt_dir: Path, log_dir: Path, resume: bool) -> Path | None:
    last = ckpt_dir / LAST
    if resume and last.is_file():
        return last
    for folder, flag in _folders(ckpt_dir, log_dir):
        if _entries(folder) and not (resume and _holds_only_a_start(folder, ckpt_dir)):
            if _holds_only_a_start(folder, ckpt_dir):
                hint = ("it holds the start of a run cut off before its first checkpoint: pass --resume "
                        "(notebook: resume = True) to start that run again")
            elif not (folder / LAST).is_file():
                hint = "it holds no checkpoint to resume"
            elif folder == ckpt_dir:
                hint = "pass --resume (notebook: resume = True) to continue it"
            else:  # a --logs-dir that is the run folder of another run, checkpoint and all
                hint = (f"it holds the checkpoint of a run: to continue that run, pass {folder} as "
                        "--ckpt-dir (notebook: runs_dir) with --resume")
            raise RunFolderError(f"{flag} {folder} is not empty ({hint}), or choose another folder")
    return None


def check_logs_belong_to(log_dir: Path, saved: dict, checkpoint: Path) -> None:
    """Resuming must not overwrite logs that are not the checkpoint's run's, up to its epoch: the
    run.json in --logs-dir must describe the checkpoint's run (the same trajectory; the folders may
    have moved since), and its logs must not go further than the checkpoint (those of the same run
    trained on from another copy of it). Without a readable run.json, a metrics.csv is the run's only
    if it is the checkpoint's history (run.json is then rebuilt from the checkpoint)."""
    saved_config = TrainConfig.from_dict(saved["config"])
    try:
        info = json.loads((log_dir / RUN_INFO).read_text())
        logged = TrainConfig.from_dict(info["config"])
    except FileNotFoundError:
        info = None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        if (log_dir / METRICS).exists() and not metrics_match(log_dir, saved["history"]):
            raise RunFolderError(f"--logs-dir {log_dir}: its {RUN_INFO} is unreadable ({_reason(err)}) and its "
                                 f"{METRICS} is not the history of {checkpoint}; if they are this run's logs, move "
                                 "both out of the folder and resume again (the checkpoint rebuilds them), else "
                                 "choose another folder") from None
        return  # the checkpoint rebuilds run.json
    if info is None:
        if (log_dir / METRICS).exists() and not metrics_match(log_dir, saved["history"]):
            # somebody's metrics without their run.json: not ours to overwrite
            raise RunFolderError(f"--logs-dir {log_dir} holds a metrics.csv but no run.json of the run in "
                                 f"{checkpoint}; choose another folder")
        return  # no logs (lost, or never written): the checkpoint rebuilds them
    conflicts = resume_conflicts(logged, saved_config)
    if conflicts:
        raise RunFolderError(f"--logs-dir {log_dir} holds the logs of another run than {checkpoint} "
                             f"({conflicts[0]}); choose another folder")
    logged_epochs = _logged_epochs(log_dir, info)
    if logged_epochs > saved["epoch"]:
        raise RunFolderError(f"--logs-dir {log_dir} holds {epochs_text(logged_epochs)} of this run, more than the "
                             f"{saved['epoch']} of {checkpoint}: resuming from it would overwrite them; resume from "
                             "the checkpoint of the run trained further, or choose another --logs-dir")


def _logged_epochs(log_dir: Path, info: dict) -> int:
    """How far the logs in log_dir go: the last epoch of metrics.csv (what can be read of it) or of
    run.json's summary, whichever is further."""
    epochs = [(info.get("summary") or {}).get("epochs_done") or 0]
    try:
        epochs.append(int(pd.read_csv(log_dir / METRICS).epoch.max()))
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # none, or unreadable: run.json's word
    return max(epochs)


def write_metrics(log_dir: Path, history: list[dict]) -> None:
    atomic_write_text(Path(log_dir) / METRICS, pd.DataFrame(history, columns=COLUMNS).to_csv(index=False))


def misses_rows(evaluation: str, epoch: int, misses: dict[str, dict]) -> pd.DataFrame:
    """The misses.csv.gz rows of one evaluation: `misses` maps a set's name to Evaluation.misses()."""
    frames = [pd.DataFrame({"set": name, "evaluation": evaluation, "epoch": epoch, **columns}, columns=MISS_COLUMNS)
              for name, columns in misses.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MISS_COLUMNS)


def write_misses(log_dir: Path, rows: list[pd.DataFrame]) -> None:
    """misses.csv.gz, whole and atomically (gzip without a time stamp: the same misses, the same bytes)."""
    text = pd.concat(rows, ignore_index=True).to_csv(index=False) if rows else ",".join(MISS_COLUMNS) + "\n"
    with atomic_path(Path(log_dir) / MISSES) as tmp:
        tmp.write_bytes(gzip.compress(text.encode(), mtime=0))


def read_misses(folder: Path) -> pd.DataFrame | None:
    """A run's misses.csv.gz (MISS_COLUMNS; label and predicted as text), or None for a run that has none
    (trained before runs recorded them). One that cannot be read is a RunFolderError naming it."""
    path = Path(folder) / MISSES
    if not path.is_file():
        return None
    try:
        misses = pd.read_csv(path, dtype={"label": str, "predicted": str})
    except (OSError, ValueError, EOFError) as err:  # EOFError: gzip cut short
        raise RunFolderError(f"{path}: not a misses file that capslib wrote ({_reason(err)})") from None
    if list(misses.columns) != MISS_COLUMNS:
        raise RunFolderError(f"{path}: columns {list(misses.columns)}, not {MISS_COLUMNS}")
    return misses


def write_run_info(log_dir: Path, info: dict) -> None:
    atomic_write_text(Path(log_dir) / RUN_INFO, json.dumps(info, indent=2) + "\n")


def selection(history: pd.DataFrame) -> dict:
    """A run's final, validation-selected and best-on-test test errors (%) and their epochs."""
    scored = history.dropna(subset=["test_error"]) if "test_error" in history else history.iloc[:0]
    if scored.empty:
        return {"final_test_error": None, "selected_test_error": None, "selected_epoch": None,
                "best_test_error": None, "best_epoch": None}
    best = scored.loc[scored.test_accuracy.idxmax()]  # the first of ties
    selected = None
    if "validation_error" in scored and scored.validation_error.notna().any():
        validated = scored.dropna(subset=["validation_error"])
        lowest = validated.validation_error.min()
        selected = validated[validated.validation_error <= lowest + 1e-9].iloc[-1]  # the latest of ties
    return {"final_test_error": float(scored.test_error.iloc[-1]),
            "selected_test_error": None if selected is None else float(selected.test_error),
            "selected_epoch": None if selected is None else int(selected.epoch),
            "best_test_error": float(best.test_error), "best_epoch": int(best.epoch)}


def epochs_text(count: int) -> str:
    """'1 epoch', '2 epochs': the lines a person reads say it as they would."""
    return "1 epoch" if count == 1 else f"{count} epochs"


def summary_line(summary: dict) -> str:
    """One line for a person: the final error, and the selected and best ones where there are."""
    if not summary:
        return "no epoch finished"
    line = f"final test error {summary['final_test_error']:.2f}% after {epochs_text(summary['epochs_done'])}"
    if summary.get("selected_test_error") is not None:
        line += (f"; selected on validation {summary['selected_test_error']:.2f}% "
                 f"(epoch {summary['selected_epoch']})")
    return line + f"; best on test {summary['best_test_error']:.2f}% (epoch {summary['best_epoch']})"


def finish_run(log_dir: Path, info: dict, history: list[dict], status: str) -> "Run":
    """Write the run's final metrics.csv and run.json (status and summary), and read it back."""
    summary = {}
    if history:
        summary = {"epochs_done": history[-1]["epoch"], **selection(pd.DataFrame(history, columns=COLUMNS)),
                   "wall_seconds": history[-1].get("wall_seconds")}
    write_metrics(log_dir, history)
    write_run_info(log_dir, {**info, "status": status, "summary": summary})
    return read_run(log_dir)


@dataclass
class Run:
    folder: Path
    config: TrainConfig
    info: dict
    history: pd.DataFrame

    @property
    def label(self) -> str:
        return configuration_label(self.config)


def run_info(folder: Path) -> dict | None:
    """A run folder's run.json, also before its first metrics.csv; None if it has none (or not a
    readable one: a run killed mid-write keeps the previous file, so that means none yet)."""
    try:
        return json.loads((Path(folder) / RUN_INFO).read_text())
    except (OSError, ValueError):
        return None


def read_run(folder: Path) -> Run:
    """A run folder (its logs dir) read back: config, run.json and metrics.csv. Logs that capslib cannot
    have written whole (a run.json that is not one, a metrics.csv cut short or ending before the epoch
    run.json says the run reached) raise RunFolderError naming the file, rather than give numbers that
    are not the run's."""
    folder = Path(folder)
    try:
        info = json.loads((folder / RUN_INFO).read_text())
        config = TrainConfig.from_dict(info["config"])
    except FileNotFoundError as err:
        raise RunFolderError(f"{folder}: not a run folder (missing {Path(err.filename).name})") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise RunFolderError(f"{folder / RUN_INFO}: not a run.json that capslib wrote ({_reason(err)})") from None
    history = read_metrics(folder / METRICS)
    done = (info.get("summary") or {}).get("epochs_done")
    last = int(history.epoch.iloc[-1]) if "epoch" in history and len(history) else None
    if done is not None and last != done:
        raise RunFolderError(f"{folder / METRICS}: ends at epoch {last}, but {RUN_INFO} says the run did {done} "
                             "(cut short?)")
    return Run(folder, config, info, history)


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv as written (a RunFolderError if it is missing, unreadable or cut in a line)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise RunFolderError(f"{Path(path).parent}: not a run folder (missing {METRICS})") from None
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: unreadable ({_reason(err)})") from None
    if text and not text.endswith("\n"):  # written whole, it ends with a line break
        raise RunFolderError(f"{path}: cut short (its last line is incomplete)")
    try:
        return pd.read_csv(io.StringIO(text))
    except ValueError as err:
        raise RunFolderError(f"{path}: not a metrics.csv that capslib wrote ({_reason(err)})") from None


def metrics_match(log_dir: Path, history: list[dict]) -> bool:
    """Whether log_dir's metrics.csv holds exactly `history` (a checkpoint's), read as written."""
    try:
        logged = read_metrics(Path(log_dir) / METRICS)
    except RunFolderError:
        return False
    written = pd.read_csv(io.StringIO(pd.DataFrame(history, columns=COLUMNS).to_csv(index=False)))
    return list(logged.columns) == list(written.columns) and logged.equals(written)


def _reason(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:120]


def find_runs(root: Path | str, pattern: str = "*") -> list[Run]:
    """The run folders `root`/`pattern` that hold a finished first epoch (run.json and metrics.csv),
    sorted by path. A run that has just started (no metrics.csv yet) is skipped, not an error: tables
    are rebuilt while other runs train."""
    folders = sorted(p.parent for p in Path(root).glob(f"{pattern}/{RUN_INFO}"))
    return [read_run(folder) for folder in folders if (folder / METRICS).is_file()]


