"""Mutation testing with a curated list of mutants: `make mutation` (outside `make test`).

Each mutant is one deliberate bug: a textual change old → new inside one definition of capslib, named
by its qualified name (a function `squash`, a method `CapsNet.forward`, a class, or a module-level
name such as `M_POS`) wherever in capslib/ it is defined. The definition must exist exactly once and
`old` must occur exactly once inside it: code that moves between files or modules keeps its mutants,
and a mutant gone stale after an edit (its definition renamed, its text rewritten) fails loudly,
before anything runs. Why curated rather than generated (mutmut, cosmic-ray): a generator makes
hundreds of mutants per module, most of them equivalent or trivial, and runs the test suite for each,
hours on two cores; these (`--list` shows them) are bugs that matter to the study, each with the
tests that should catch it.
They are bugs that matter to the study: the paper's math (squash, routing, margin and
reconstruction losses, decoder), the data pipeline (IDX parsing, shifts, epoch streams, the range
of every random generator), the training loop (lr, batches, resume), evaluation, the CUDA-graph
set-up's snapshot, checkpoints, run folders and sweeps stopped from outside (kill -9, SIGTERM,
Ctrl-C, a full disk), figures, tables and the HTML reports. For each, the tests that should catch it run (`pytest -x`, no
notebooks); the mutant is killed when they fail (or time out) and survives when they pass.

The checkout is never changed: capslib/ and tests/ are copied into a temporary folder (data/
linked), each mutant is written into the copy and undone after its run, and the copy is removed at
the end, also on Ctrl-C. Before the mutants, the selected tests must pass on the unmutated copy.

    python tools/mutation.py              # every mutant; exit status 1 below --min-score
    python tools/mutation.py -k shift     # the mutants whose name contains 'shift'
    python tools/mutation.py --list       # names and descriptions only
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Test selections, fastest first (pytest -x stops at the first failure).
MODEL = ["tests/test_losses.py", "tests/test_model.py"]
DATA = ["tests/test_data.py"]
EPOCHS = ["tests/test_epochs.py"]
EVALUATION = ["tests/test_evaluate.py"]
SPEED = ["tests/test_speed.py"]
FIGURES = ["tests/test_figures.py"]
RESUME = ["tests/test_train.py::test_resume_continues_the_same_trajectory",
          "tests/test_train.py::test_resume_refuses_a_different_setup"]
SCHEDULE = ["tests/test_train.py::test_learning_rate_follows_the_seed_study_schedule"]
DIVERGENCE = ["tests/test_train.py::test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint"]
RESTART = ["tests/test_train.py::test_the_start_of_a_run_cut_off_says_resume_starts_it_again",
           "tests/test_train.py::test_a_best_pt_that_is_not_this_runs_first_evaluation_is_never_overwritten",
           "tests/test_interrupts.py::test_killed_while_writing_the_first_last_pt_resumes"]
SWEEP_STOPPED = "tests/test_interrupts.py::test_a_stopped_sweep_stops_its_runs_and_a_rerun_continues_them"
PREDICT = ["tests/test_predict.py"]
CPU_SPEED = ["tests/test_cpu_speed.py"]
MISSES = ["tests/test_train.py::test_a_run_records_which_test_images_it_got_wrong_at_its_last_and_selected_evaluations",
          "tests/test_train.py::test_a_resumed_run_keeps_the_misses_of_the_evaluation_it_selected_before"]
PAIRED = ["tests/test_paired.py"]
LAPTOP = ["tests/test_profiles.py::test_a_cpu_notebook_left_at_auto_shows_the_laptop_run"]
MAKE_LAPTOP = ["tests/test_profiles.py::test_make_laptop_in_a_fresh_clone_trains_the_users_own_model_where_the_notebooks_look"]
CUT_METRICS = "tests/test_cli.py::test_a_finished_run_whose_metrics_csv_was_cut_gets_it_back_from_its_checkpoint"
ENDED = ["tests/test_train.py::test_whatever_ends_a_run_early_is_recorded_in_run_json"]
RECIPES = ["tests/test_recipes.py"]
LOCKS = ["tests/test_gpus.py"]
REPORTS = ["tests/test_reports.py"]
MULTIMNIST_SHIFTS = "tests/test_generated.py::test_multimnist_shifts_are_every_shift_of_up_to_4_px_in_training_and_test"
EXPANDED_SHIFTS = "tests/test_generated.py::test_expanded_mnist_shifts_are_every_shift_of_up_to_6_px_in_training_and_test"
AFFINE_PARAMETERS = "tests/test_generated.py::test_affine_parameters_cover_the_affnist_ranges"
# capslib evaluate on tiny MultiMNIST and expanded-MNIST runs (trained once per pytest process)
GENERATED_EVAL = ["tests/test_cli.py::test_evaluate_multimnist_reproduces_the_test_error_training_logged",
                  "tests/test_cli.py::test_evaluate_multimnist_scores_test_pairs_of_the_first_test_subset_images",
                  "tests/test_cli.py::test_evaluate_expanded_mnist_scores_the_expanded_and_the_affine_test_sets"]


@dataclass(frozen=True)
class Mutant:
    name: str
    where: str     # the qualified name of the definition that holds `old` (see the module doc)
    old: str
    new: str
    tests: list[str]
    why: str


def definitions(root: Path) -> dict[str, list[tuple[Path, int, int]]]:
    """Every top-level definition under root/capslib by qualified name (methods as Class.method,
    module-level assignments by each name they bind): the file and its line span [start, end)."""
    found: dict[str, list[tuple[Path, int, int]]] = {}
    for path in sorted((root / "capslib").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            named = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                named.append((node.name, node))
                if isinstance(node, ast.ClassDef):
                    named += [(f"{node.name}.{item.name}", item) for item in node.body
                              if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                named += [(n.id, node) for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            for name, item in named:
                start = min([item.lineno] + [d.lineno for d in getattr(item, "decorator_list", [])]) - 1
                found.setdefault(name, []).append((path, start, item.end_lineno))
    return found


def locate(mutant: Mutant, found: dict) -> tuple[Path, int, int] | str:
    """Where `mutant` applies (file, line span), or why it cannot."""
    places = found.get(mutant.where, [])
    if len(places) != 1:
        return f"{mutant.where} is defined {len(places)} times in capslib/"
    path, start, end = places[0]
    count = "".join(path.read_text().splitlines(keepends=True)[start:end]).count(mutant.old)
    return places[0] if count == 1 else f"{mutant.old!r} occurs {count} times in {mutant.where}"


def mutated(text: str, mutant: Mutant, start: int, end: int) -> str:
    lines = text.splitlines(keepends=True)
    segment = "".join(lines[start:end]).replace(mutant.old, mutant.new)
    return "".join(lines[:start]) + segment + "".join(lines[end:])


MUTANTS = [
    # --- the paper's math -------------------------------------------------------------------
    Mutant('squash-unit-length', 'squash', '(1 + squared_norm) * torch.sqrt',
           'squared_norm * torch.sqrt', MODEL,
           'squash returns s/‖s‖: every capsule has length 1'),
    Mutant('squash-no-epsilon', 'squash', 'eps: float = 1e-8',
           'eps: float = 0.0', MODEL,
           'squash without epsilon: NaN gradient at s = 0'),
    Mutant('routing-softmax-over-children', 'dynamic_routing', 'logits.softmax(dim=2)',
           'logits.softmax(dim=1)', MODEL,
           'coupling coefficients normalised over the 1152 children instead of the 10 parents'),
    Mutant('routing-logits-not-accumulated', 'dynamic_routing', 'logits = logits + (votes * v.unsqueeze(1)).sum(dim=-1)',
           'logits = (votes * v.unsqueeze(1)).sum(dim=-1)', MODEL,
           'b_ij = û·v instead of b_ij += û·v'),
    Mutant('routing-detaches-every-iteration', 'dynamic_routing', 'votes = u_hat if last else u_hat_early',
           'votes = u_hat_early', MODEL,
           'detach_routing stops gradients in the last iteration too'),
    Mutant('u-hat-one-matrix-per-parent', 'prediction_vectors', 'torch.einsum("bik,ijdk->bijd", u, W)',
           'torch.einsum("bik,jdk->bijd", u, W[0])', MODEL,
           'one W_j shared by all 1152 primary capsules'),
    Mutant('primary-capsules-grouped-wrongly', 'CapsNet.primary_capsules', 'u = features.permute(0, 2, 3, 1).float()',
           'u = features.reshape(len(images), 6, 6, 256).float()', MODEL,
           'a capsule takes 8 positions of one channel, not 8 channels at one position'),
    Mutant('margin-lambda-1', 'M_POS', 'M_POS, M_NEG, LAMBDA = 0.9, 0.1, 0.5',
           'M_POS, M_NEG, LAMBDA = 0.9, 0.1, 1.0', MODEL + EPOCHS,
           'absent classes weighted 1 instead of λ = 0.5'),
    Mutant('margin-official-extra-half', 'margin_loss', 'return per_class.sum(dim=1).mean()',
           'return 0.5 * per_class.sum(dim=1).mean()', MODEL,
           "the official code's extra 0.5 (the paper has none)"),
    Mutant('margin-not-squared', 'margin_loss', 'F.relu(m_pos - lengths) ** 2',
           'F.relu(m_pos - lengths)', MODEL,
           'present-class term not squared'),
    Mutant('reconstruction-loss-mean-pixel', 'reconstruction_loss', 'return (error * error).sum(dim=1).mean()',
           'return (error * error).mean()', MODEL,
           'mean over pixels instead of the sum of squared errors'),
    Mutant('reconstruction-weight-10x', 'RECONSTRUCTION_WEIGHT', 'RECONSTRUCTION_WEIGHT = 0.0005',
           'RECONSTRUCTION_WEIGHT = 0.005', MODEL + EPOCHS,
           "reconstruction weight 0.005 instead of the paper's 0.0005"),
    Mutant('decoder-unmasked', 'Decoder.forward', 'self.layers((capsules * mask.unsqueeze(-1)).flatten(1))',
           'self.layers(capsules.flatten(1))', MODEL,
           "the decoder sees every class's capsule"),
    Mutant('decoder-class-0-at-test', 'CapsNet.forward', 'else predicted_classes(lengths, self.num_targets)',
           'else torch.zeros_like(predicted_classes(lengths, self.num_targets))', MODEL + FIGURES,
           'at test time the decoder decodes class 0'),
    Mutant('decoder-predicted-class-in-training', 'CapsNet.forward', 'classes = targets if targets is not None else predicted_classes(lengths, self.num_targets)',
           'classes = predicted_classes(lengths, self.num_targets)', MODEL,
           'in training the decoder decodes the predicted class, not the true one'),
    Mutant('scores-squared-lengths', 'CapsNet.forward', 'lengths = capsules.norm(dim=-1)',
           'lengths = capsules.square().sum(dim=-1)', MODEL,
           'margin loss on squared lengths'),
    # --- the data pipeline ----------------------------------------------------------------
    Mutant('idx-little-endian', 'parse_idx', 'int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big")',
           'int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "little")', DATA,
           'IDX dimensions read little-endian'),
    Mutant('idx-trailing-bytes-accepted', 'parse_idx', 'if len(data) != expected:',
           'if len(data) < expected:', DATA,
           'an IDX file longer than its header says is accepted'),
    Mutant('md5-not-checked', 'read_idx', 'if actual != expected_md5:',
           'if False:', DATA,
           'the MD5 of the data files is never checked'),
    Mutant('label-10-accepted', '_check_labels', 'labels.max() >= NUM_CLASSES',
           'labels.max() > NUM_CLASSES', DATA,
           'a label of 10 passes validation'),
    Mutant('pixels-over-256', 'to_tensors', '.float().div_(255)',
           '.float().div_(256)', DATA,
           'pixels scaled to [0, 255/256]'),
    Mutant('shift-range-one-short', 'random_shift', 'torch.randint(0, 2 * max_shift + 1,',
           'torch.randint(0, 2 * max_shift,', DATA,
           'shifts drawn from [-2, 1] instead of [-2, 2]'),
    Mutant('shift-direction-flipped', 'shift_images', 'rows = (pad - shifts[:, 0, None])',
           'rows = (pad + shifts[:, 0, None])', DATA,
           'shift_images moves up when asked to move down'),
    Mutant('default-shift-3 (bug 3)', 'TrainConfig', 'max_shift: int = option(2,',
           'max_shift: int = option(3,', EPOCHS,
           "the default shift range is 3 pixels, not the paper's 2"),
    Mutant('epoch-labels-not-shuffled', 'epoch_data', 'max_shift, generator), labels[order]',
           'max_shift, generator), labels', DATA + EPOCHS,
           'images shuffled, labels not: every label wrong'),
    Mutant('epoch-stream-ignores-epoch', 'epoch_generator', 'generator.manual_seed(seed * 1_000_003 + epoch)',
           'generator.manual_seed(seed * 1_000_003)', DATA + EPOCHS,
           'every epoch draws the same order and shifts'),
    Mutant('test-subset-from-train-subset', 'load_dataset', 'test_images[:test_subset], test_labels[:test_subset]',
           'test_images[:train_subset], test_labels[:train_subset]', DATA,
           '--test-subset ignored'),
    # --- the training loop ----------------------------------------------------------------
    Mutant('lr-never-set (bug 1)', '_train_epoch', 'lr = learning_rate(config, epoch, first_step)\n    set_lr(optimizer, lr)\n',
           'lr = learning_rate(config, epoch, first_step)\n', EPOCHS,
           'the lr is logged each epoch but never reaches the optimizer'),
    Mutant('lr-schedule-off-by-one', 'learning_rate', 'exponent = epoch if config.lr_decay_steps',
           'exponent = epoch + 1 if config.lr_decay_steps', SCHEDULE + EPOCHS,
           'the first epoch already decayed'),
    Mutant('ragged-batch-kept (bug 2)', '_train_epoch', 'steps, batch = len(images) // config.batch_size, config.batch_size',
           'steps, batch = -(-len(images) // config.batch_size), config.batch_size', EPOCHS,
           'the ragged last batch is trained on (a smaller batch; breaks the CUDA graph)'),
    Mutant('training-unshifted', 'epoch_examples', 'epoch_data(images, labels, config.seed, epoch, config.max_shift,',
           'epoch_data(images, labels, config.seed, epoch, 0,', EPOCHS,
           'no shift augmentation in training'),
    Mutant('same-batches-every-epoch', '_train_epoch', 'epoch_examples(config, train_x, train_y, epoch)',
           'epoch_examples(config, train_x, train_y, 0)', EPOCHS,
           "every epoch trains on epoch 0's order and shifts"),
    Mutant('train-accuracy-over-all-images', '_train_epoch', '"train_accuracy": sums["correct"] / (steps * batch)',
           '"train_accuracy": sums["correct"] / len(images)', EPOCHS,
           'train accuracy divided by the images of the epoch, dropped ones included'),
    Mutant('gradients-accumulate', 'TrainStep.__call__', 'self.optimizer.zero_grad(set_to_none=True)\n        return self.compute(',
           'return self.compute(', SPEED + RESUME,
           'gradients are never zeroed between steps'),
    Mutant('resume-without-adam-state', '_train', 'ckpt.load_optimizer_state(optimizer, saved["optimizer"])',
           'ckpt.load_optimizer_state(optimizer, optimizer.state_dict())', RESUME,
           'a resumed run starts with a fresh Adam'),
    Mutant('resume-restarts-at-epoch-0', '_train', 'for epoch in range(start_epoch, config.epochs):',
           'for epoch in range(config.epochs):', RESUME,
           'a resumed run trains its finished epochs again'),
    Mutant('resume-ignores-a-changed-setup', 'resume_conflicts', 'if f.name not in ignored and getattr(saved, f.name) != getattr(requested, f.name)]',
           'if False]', RESUME,
           'resuming with another routing or seed silently mixes two setups'),
    Mutant('divergence-not-detected', '_Record.add_evaluation', 'if not all(math.isfinite(row[k]) for k in ("train_loss", "test_loss")):',
           'if False:', DIVERGENCE,
           'a NaN loss is checkpointed and training goes on'),
    Mutant('run-json-running-after-an-error', '_status_kept_true', 'write_run_info(log_dir, ended)',
           'pass', ENDED,
           "a run ended by an error or Ctrl-C is left 'running' in its run.json"),
    Mutant('best-pt-blocks-a-restart', '_holds_only_a_start', 'start = {RUN_INFO, BEST} if folder == ckpt_dir else {RUN_INFO}',
           'start = {RUN_INFO}', RESTART,
           'a run killed while writing its first last.pt (best.pt written) can never be resumed or restarted'),
    Mutant('restart-over-any-best-pt', '_check_restart_over', 'if conflicts or len(saved["history"]) != 1:',
           'if False:', RESTART,
           "starting a run again overwrites another run's best.pt, or one of a run trained further"),
    Mutant('sigterm-kills-capslib-train', 'main', 'previous = raise_on_sigterm() if in_main_thread else None',
           'previous = None', ['tests/test_interrupts.py::test_sigterm_stops_capslib_train_as_ctrl_c_does'],
           "SIGTERM kills capslib train outright: no line, and run.json says 'running' for ever"),
    Mutant('ctrl-c-while-capslib-loads', 'run_capslib', 'except KeyboardInterrupt:',
           'except ImportError:', ['tests/test_interrupts.py::test_ctrl_c_while_capslib_loads_is_one_line'],
           'Ctrl-C in the first fraction of a second, while capslib.cli loads, prints a traceback'),
    Mutant('sweep-workers-die-on-sigterm', '_train_in_worker', 'previous = raise_on_sigterm()',
           'previous = signal.getsignal(signal.SIGTERM)', [SWEEP_STOPPED + "[SIGTERM]"],
           "a stopped sweep's runs are killed mid-step, their run.json left 'running'"),
    Mutant('worker-sigterm-handler-outlives-its-run', '_train_in_worker', '    finally:\n        signal.signal(signal.SIGTERM, previous)\n',
           '', ['tests/test_interrupts.py::test_a_pool_worker_turns_sigterm_into_a_stop_only_while_its_run_trains'],
           'every sweep ends with a Terminated traceback from a worker that the pool stops as it exits'),
    Mutant('sweep-workers-outlive-their-sweep', '_stop_when_orphaned', 'os.kill(os.getpid(), signal.SIGTERM)',
           'pass', [SWEEP_STOPPED + "[SIGKILL]"],
           "a sweep killed outright leaves its runs training, adopted by init, holding their folders' locks"),
    Mutant('full-disk-checkpoint-traceback', 'atomic_save', 'raise cause from None',
           'raise', ['tests/test_interrupts.py::test_a_disk_that_fills_during_a_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint'],
           "a disk that fills during a checkpoint write is torch's RuntimeError traceback"),
    Mutant('cut-metrics-csv-kept', 'train', 'if info.get("status") == "complete" and metrics_match(log_dir, saved["history"]):',
           'if info.get("status") == "complete" and (log_dir / METRICS).is_file():', [CUT_METRICS],
           'a finished run whose metrics.csv was cut keeps it: read back, its final error is an earlier epoch\'s'),
    Mutant('cut-metrics-csv-read', 'read_metrics', 'if text and not text.endswith("\\n"):',
           'if False:', [CUT_METRICS],
           'a metrics.csv cut in its last line is read as if whole (the cut row: NaN, or a number cut short)'),
    Mutant('garbage-run-json-blocks-its-run', 'check_logs_belong_to', 'if (log_dir / METRICS).exists() and not metrics_match(log_dir, saved["history"]):\n            raise RunFolderError(f"--logs-dir {log_dir}: its',
           'if (log_dir / METRICS).exists():\n            raise RunFolderError(f"--logs-dir {log_dir}: its',
           ['tests/test_cli.py::test_a_run_json_replaced_by_garbage'],
           "a run whose run.json was overwritten by garbage can never be resumed in its own folder"),
    Mutant('resume-cuts-logs-trained-further', 'check_logs_belong_to', 'if logged_epochs > saved["epoch"]:',
           'if False:', ['tests/test_cli.py::test_resume_never_cuts_the_logs_of_the_same_run_trained_further'],
           "resuming a shorter copy of a run rewrites --logs-dir's longer logs of it from the copy's epoch on"),
    Mutant('checkpoint-without-adam-state', 'save_checkpoint', 'state.update(optimizer=optimizer.state_dict(),',
           'state.update(optimizer={**optimizer.state_dict(), "state": {}},', RESUME,
           "checkpoints lose Adam's moments"),
    # --- the official recipe, the validation protocol, the locks -----------------------------
    Mutant('official-margin-weight-paper', 'OFFICIAL_MARGIN_WEIGHT', 'OFFICIAL_MARGIN_WEIGHT = 0.05',
           'OFFICIAL_MARGIN_WEIGHT = 0.5', RECIPES,
           'the official loss scaling misread as × 0.5'),
    Mutant('digit-bias-ignored', 'dynamic_routing', 'v = squash(s if bias is None else s + bias)',
           'v = squash(s)', RECIPES,
           'the DigitCaps bias is learned but never used'),
    Mutant('slim-without-division', 'CapsNet.primary_capsules', 'u = u * self.primary_scale + self.primary_bias',
           'u = u + self.primary_bias', RECIPES,
           "conv_slim_capsule's zero-logit softmax (÷ 32) left out"),
    Mutant('official-init-untruncated', 'CapsNet._official_init', 'nn.init.trunc_normal_(self.W, std=0.1, a=-0.2, b=0.2)',
           'nn.init.normal_(self.W, std=0.1)', RECIPES,
           'W drawn from an untruncated normal'),
    Mutant('all-shifts-without-buffer', 'all_shifts_order', 'return torch.argsort(arrival + wait, stable=True)',
           'return torch.randperm(records, generator=generator, device=generator.device)', RECIPES,
           'the official stream fully shuffled instead of read through a 5,000-record buffer'),
    Mutant('all-shifts-one-shift', 'epoch_data', 'image_index, shift_index = records // (side * side), records % (side * side)',
           'image_index, shift_index = records // (side * side), records * 0', RECIPES,
           'the official stream repeats one shift 25 times'),
    Mutant('step-schedule-per-epoch', 'learning_rate', 'exponent = epoch if config.lr_decay_steps is None else step / config.lr_decay_steps',
           'exponent = epoch', RECIPES,
           '--lr-decay-steps ignored: the official schedule decays per epoch'),
    Mutant('schedule-without-floor', 'learning_rate', 'return max(config.lr * config.lr_decay ** exponent, config.min_lr)',
           'return config.lr * config.lr_decay ** exponent', RECIPES,
           'the official floor of 1e-6 ignored'),
    Mutant('validation-split-from-the-end', 'load_dataset', 'validation = (train_images[:validation_size], train_labels[:validation_size])',
           'validation = (train_images[-validation_size:], train_labels[-validation_size:])', RECIPES,
           'the validation images are the last, not the first (and overlap the training images)'),
    Mutant('selection-earliest-of-ties', 'selection', 'lowest + 1e-9].iloc[-1]  # the latest of ties',
           'lowest + 1e-9].iloc[0]  # the latest of ties', RECIPES,
           'ties broken by the earliest evaluation'),
    Mutant('selection-on-test', 'selection', 'lowest = validated.validation_error.min()',
           'lowest = validated.test_error.min()', RECIPES,
           "the 'selected on validation' error selected on the test set"),
    Mutant('ablation-interval-normal', 'difference_interval', 'half = (T_975[df - 1] if df <= len(T_975) else 1.96)',
           'half = 1.96', RECIPES,
           'the 95% interval with the normal quantile for 4 degrees of freedom'),
    Mutant('cli-default-not-configs', 'given_fields', 'if f.name != "recipe" and hasattr(args, f.name)}',
           'if f.name != "recipe"}', RECIPES,
           "the command line's defaults drift from TrainConfig's"),
    Mutant('explicit-none-dropped', 'given_fields', 'if f.name != "recipe" and hasattr(args, f.name)}',
           'if f.name != "recipe" and getattr(args, f.name, None) is not None}',
           ['tests/test_cli.py::test_an_explicit_none_is_honoured_end_to_end'],
           "--recipe official --lr-decay-steps none trains the recipe's 2,000-step schedule"),
    Mutant('seed-named-twice-accepted', 'run_sweep', 'if len(set(seeds)) != len(seeds):',
           'if False:', ['tests/test_recipes.py::test_a_seed_named_twice_is_refused_in_one_line'],
           '--seeds 1,1 trains one run twice into one folder'),
    Mutant('gpu-lock-shared', 'try_claim', 'fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)',
           'fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)', LOCKS,
           'two runs can hold the same GPU'),
    Mutant('gpu-slots-stacked-before-spread', 'claim_gpu',
           '        for slot in range(1, slots + 1):\n            for index, gpu_id in enumerate(gpu_ids):',
           '        for index, gpu_id in enumerate(gpu_ids):\n            for slot in range(1, slots + 1):',
           ['tests/test_gpus.py::test_runs_per_gpu_fills_every_gpu_once_before_any_gpu_takes_a_second_run'],
           'with K runs per GPU, the first GPU takes K runs while the others idle'),
    Mutant('runs-per-gpu-flag-ignored', 'run_sweep', 'os.environ[RUNS_PER_GPU] = str(args.runs_per_gpu)',
           'pass', ['tests/test_gpus.py::test_sweep_runs_per_gpu_reaches_every_run_it_starts'],
           'sweep --runs-per-gpu K changes nothing'),
    Mutant('gpu-lock-errors-unexplained', 'try_claim', '    except OSError as err:\n        where',
           '    except ImportError as err:\n        where', ['tests/test_gpus.py::test_a_lock_folder_or_file_that_cannot_be_used_is_one_line'],
           'a GPU lock folder or file that cannot be used is a traceback'),
    Mutant('run-folder-unlocked', 'open_run_folder', '            locks.enter_context(_lock(folder, flag))\n',
           '            pass\n', LOCKS,
           'two trainings can write into one run folder'),
    # --- evaluation -----------------------------------------------------------------------
    Mutant('eval-ragged-batch-weighted-by-batch-size (bug 5)', 'evaluate_set', 'for p in parts]) * len(x)',
           'for p in parts]) * batch_size', EVALUATION + EPOCHS,
           'the last, ragged evaluation batch weighted by the batch size instead of its length'),
    Mutant('eval-argmin', 'is_correct', 'return scores.argmax(dim=1) == targets',
           'return scores.argmin(dim=1) == targets', EVALUATION,
           'predictions are the lowest scores'),
    Mutant('eval-test-images-shifted', 'TensorSet.batch', 'return Examples(self.images[start:stop], self.labels[start:stop])',
           'return Examples(self.images[start:stop].roll(1, dims=-1), self.labels[start:stop])', EPOCHS,
           'the test images are shifted by a pixel at evaluation'),
    Mutant('eval-in-training-mode', 'evaluate_set', '    model.eval()\n    device = ',
           '    model.train()\n    device = ', EVALUATION,
           'evaluation runs in training mode (dropout on, for the baseline CNN)'),
    Mutant('eval-leaves-eval-mode', 'evaluate_set', '* len(x)\n    finally:\n        model.train(was_training)',
           '* len(x)\n    finally:\n        pass', EVALUATION,
           'training continues in eval mode after an evaluation'),
    Mutant('confusion-matrix-transposed', 'Evaluation.confusion_matrix', 'self.labels * num_classes + self.predictions',
           'self.predictions * num_classes + self.labels', EVALUATION,
           'confusion matrix rows are predictions'),
    # --- the generated test sets and capslib evaluate on them ---------------------------------
    Mutant('multimnist-batch-pads-whole-set', 'overlay', 'a = shift_images(F.pad(images[base], (pad,) * 4), base_shift, pad)\n    b = shift_images(F.pad(images[partner], (pad,) * 4), partner_shift, pad)',
           'padded = F.pad(images, (pad,) * 4)\n    a = shift_images(padded[base], base_shift, pad)\n    b = shift_images(padded[partner], partner_shift, pad)', ['tests/test_generated.py::test_multimnist_batch_pads_only_its_own_digits'],
           'every test batch pads all the test images, not only its own digits'),
    Mutant('multimnist-test-set-redrawn', 'MultiMNISTSet.at', 'for stream in range(5)]',
           'for stream in range(1, 6)]', ['tests/test_generated.py::test_multimnist_test_set_is_the_one_defined'],
           'the fixed MultiMNIST test pairs change (other hash streams)'),
    # each random generator covers its range exactly: a range one short at one end is a bug no
    # |shift| <= N check sees
    Mutant('multimnist-shift-range-one-short', 'multimnist_epoch', 'torch.randint(-shift, shift + 1,',
           'torch.randint(-shift, shift,', [MULTIMNIST_SHIFTS],
           'MultiMNIST training shifts drawn from [-4, 3] instead of [-4, 4]'),
    Mutant('multimnist-test-shift-range-one-short', 'MultiMNISTSet.at', '_uniform_int(v, -self.shift, self.shift)',
           '_uniform_int(v, -self.shift, self.shift - 1)', [MULTIMNIST_SHIFTS],
           'MultiMNIST test shifts drawn from [-4, 3] instead of [-4, 4]'),
    Mutant('hashed-integers-never-high', '_uniform_int', '(u * (high - low + 1))',
           '(u * (high - low))', [MULTIMNIST_SHIFTS, EXPANDED_SHIFTS],
           'the hashed test-set shifts never reach their highest value'),
    Mutant('expanded-shift-5', 'DATASETS', 'generator="expanded", source="mnist",\n                                  pad=6, shift=6',
           'generator="expanded", source="mnist",\n                                  pad=6, shift=5', [EXPANDED_SHIFTS],
           'expanded MNIST trained on shifts of up to 5 px, not 6'),
    Mutant('expanded-test-shift-range-one-short', 'ShiftedSet.batch', '-self.pad, self.pad)',
           '-self.pad, self.pad - 1)', [EXPANDED_SHIFTS],
           'expanded MNIST test shifts drawn from [-6, 5] instead of [-6, 6]'),
    Mutant('all-shifts-range-one-short', 'epoch_data', 'side = 2 * max_shift + 1',
           'side = 2 * max_shift', ['tests/test_recipes.py::test_all_shifts_epochs_show_every_image_in_all_25_shifts_per_pass'],
           'the official stream holds 16 shifts per image ([-2, 1]²), not 25'),
    Mutant('affine-rotation-one-degree-short', 'AFFINE_RANGES', '"rotation_degrees": (-20.0, 20.0)',
           '"rotation_degrees": (-20.0, 19.0)', [AFFINE_PARAMETERS],
           'affNIST-style rotations up to 19° one way, 20° the other'),
    Mutant('affine-scale-y-one-step-short', 'AFFINE_RANGES', '"scale_y": (0.8, 1.2)',
           '"scale_y": (0.8, 1.1)', [AFFINE_PARAMETERS],
           'affNIST-style vertical scales up to 1.1, not 1.2'),
    Mutant('top2-rule-one-digit-enough', 'is_correct', '== targets.sort(dim=1).values).all(dim=1)',
           '== targets.sort(dim=1).values).any(dim=1)', ['tests/test_generated.py::test_top2_rule_on_hand_made_scores', 'tests/test_cli.py::test_evaluate_multimnist_scores_test_pairs_of_the_first_test_subset_images'],
           'a MultiMNIST pair counts as correct when one of its two digits is in place'),
    Mutant('evaluate-ignores-test-pairs', 'score_checkpoint', 'config = dataclasses.replace(config, test_pairs=test_pairs).validate()',
           'config = config.validate()', GENERATED_EVAL,
           "capslib evaluate --test-pairs N scores the run's own pairs"),
    Mutant('evaluate-ignores-test-subset', 'run_test_images', 'subset = test_subset or config.test_subset',
           'subset = config.test_subset', GENERATED_EVAL,
           "capslib evaluate --test-subset N scores the run's own subset"),
    Mutant('evaluate-without-affine-set', 'split_sets', 'if split == "test":\n            sets["affine"]',
           'if split == "never":\n            sets["affine"]', GENERATED_EVAL,
           'expanded MNIST is scored without its affNIST-style set'),
    Mutant('multimnist-study-paper-pairs', 'MULTIMNIST_TEST_PAIRS', 'MULTIMNIST_TEST_PAIRS = 100',
           'MULTIMNIST_TEST_PAIRS = 1000', ['tests/test_recipes.py::test_multimnist_study_scores_100_test_pairs_per_image_and_train_keeps_the_papers_1000'],
           'the MultiMNIST study scores 10M test pairs, more than a time-limited job can'),
    Mutant('multimnist-table-pairs-per-image', 'multimnist_table', 'scored = {str(run.folder): run.info["test_images"] * run.config.test_pairs for run in runs}',
           'scored = {str(run.folder): run.config.test_pairs for run in runs}', ['tests/test_figures.py::test_multimnist_table_shows_the_test_pairs_each_run_scored'],
           'the MultiMNIST table shows pairs per test image as the pairs scored'),
    Mutant('resume-from-weights-only', 'load_resumable', 'if not all(isinstance(checkpoint.get(key), dict) for key in ("optimizer", "rng")):',
           'if False:', ['tests/test_cli.py::test_resume_from_a_weights_only_last_pt_is_one_line'],
           '--resume from a best.pt copied over last.pt ends in a KeyError traceback'),
    # --- the CUDA-graph set-up (runs on the CPU too) and the training step -------------------
    Mutant('restore-keeps-warm-up-adam-state (bug 4)', '_restore', 'value.copy_(before[key]) if key in before else value.zero_()',
           'value.copy_(before[key]) if key in before else None', SPEED,
           "the graph path starts training with the warm-up's Adam moments"),
    Mutant('restore-keeps-warm-up-weights', '_restore', 'p.copy_(value)',
           'p.detach()', SPEED,
           "the graph path starts training from the warm-up's weights"),
    Mutant('restore-replaces-weight-tensors', '_restore', 'p.copy_(value)',
           'p.data = value', SPEED,
           'restored weights are new tensors: the captured graph updates the old ones'),
    Mutant('snapshot-aliases-adam-state', '_snapshot', '{k: v.clone() if torch.is_tensor(v) else v',
           '{k: v if torch.is_tensor(v) else v', SPEED,
           "the snapshot of Adam's state is the live state"),
    Mutant('set-lr-replaces-lr-tensor', 'set_lr', 'group["lr"].fill_(lr)',
           'group["lr"] = torch.tensor(lr)', SPEED,
           'the captured graph keeps the initial lr'),
    Mutant('train-step-counts-argmin', 'step_statistics', 'correct = is_correct(output.scores, targets)',
           'correct = is_correct(-output.scores, targets)', SPEED,
           'train accuracy counts the lowest scores'),
    # --- the CPU paths and the laptop profile ---------------------------------------------------
    Mutant('cpu-bf16-without-native-bf16', 'choose_cpu_path', 'if report.bf16:',
           'if True:', CPU_SPEED,
           '--speed auto takes bfloat16 on a CPU without native bf16 (slower than float32 there)'),
    Mutant('cpu-compiles-short-runs', 'choose_cpu_path', 'images >= CPU_COMPILE_MIN_IMAGES',
           'images >= 0', CPU_SPEED,
           '--speed auto compiles a run too short to repay the compilation'),
    Mutant('cpu-bf16-from-any-flag', 'native_bf16', 'if flag in flags:',
           'if flags:', CPU_SPEED,
           'any CPU flag counts as native bfloat16'),
    Mutant('wgrad-without-dilation', '_WeightGradAsForward.backward',
           'grad_w = F.conv2d(x[:, :, :rows, :cols].transpose(0, 1), grad.transpose(0, 1), dilation=s)',
           'grad_w = F.conv2d(x[:, :, :rows:s, :cols:s].transpose(0, 1), grad.transpose(0, 1))', CPU_SPEED,
           "the primary capsules' weight gradient on the CPU bf16 paths ignores the stride"),
    Mutant('leaked-semaphores-warned-after-kill-9', '_start_quiet_resource_tracker', 'os.dup2(quiet, 2)',
           'os.dup2(saved, 2)', [SWEEP_STOPPED + "[SIGKILL]"],
           'a sweep of --jobs 2 killed outright leaves a resource_tracker warning of leaked semaphores'),
    Mutant('stop-in-a-finalizer-ignored', '_stop_later', 'if not isinstance(unraisable.exc_value, KeyboardInterrupt):',
           'if True:', ["tests/test_interrupts.py::test_a_sigterm_that_lands_in_a_finalizer_stops_the_process_without_a_traceback"],
           'a SIGTERM landing in a finalizer (torch._dynamo) is an "Exception ignored" traceback and the run goes on'),
    Mutant('scancel-names-the-first-task-only', 'cancel_command', '[t.job for t in waiting]',
           '[t.job for t in waiting[:1]]',
           ["tests/test_slurm.py::test_a_sweep_waiting_on_tasks_submitted_before_names_each_in_its_scancel"],
           'a sweep waiting on tasks 1_0 and 1_1 says `scancel 1_0` cancels them'),
    Mutant('missing-dependency-traceback', 'run_capslib', 'if not err.name or err.name.split(".")[0] == "capslib":',
           'if True:', ["tests/test_cli.py::test_a_dependency_not_installed_is_one_line_saying_make_setup"],
           'capslib --help before make setup is a ModuleNotFoundError traceback'),
    Mutant('sweep-folder-a-file-accepted', '_check_folder_flag', 'if path.exists() and not path.is_dir():',
           'if False:', ["tests/test_recipes.py::test_a_sweep_folder_that_is_a_file_is_refused_in_one_line_naming_its_flag"],
           'sweep --results-dir <a file> fails run by run, exit 1, naming --logs-dir instead of the flag given'),
    Mutant('laptop-logs-in-the-committed-record', 'LAPTOP_RESULTS', 'Path("runs/laptop/logs")',
           'Path("results/laptop")', MAKE_LAPTOP,
           "the notebooks look for the user's laptop run in the committed record, where make laptop finds it done"),
    Mutant('explicit-profile-takes-the-laptop-run', 'trained_run', 'if not runs and profile == "auto" and',
           'if not runs and profile and', LAPTOP,
           'a notebook given a profile shows the laptop model instead of training at that size'),
    # --- capslib predict ----------------------------------------------------------------------
    Mutant('predict-digit-in-the-corner', 'in_frame', 'F.pad(images, (info.pad,) * 4)',
           'F.pad(images, (0, 2 * info.pad, 0, 2 * info.pad))', PREDICT,
           "an expanded-MNIST model reads the digit in its frame's corner, not its middle"),
    Mutant('predict-multimnist-accepted', 'in_frame', 'if info.targets > 1:',
           'if False:', PREDICT,
           'a MultiMNIST model is given one digit: a traceback from its primary capsules'),
    Mutant('predict-16-bit-clipped', 'read_grey', 'if image.mode in WIDE_GREY:',
           'if False:', PREDICT,
           "a 16-bit PNG goes through Pillow's 8-bit conversion, which clips it to 0/1 ink"),
    Mutant('predict-16-bit-scaled-as-8-bit', '_wide_grey', 'return pixels / 65535.0',
           'return np.clip(pixels / 255.0, 0.0, 1.0)', PREDICT,
           'a 16-bit grey level is read as if white were 255'),
    Mutant('save-converted-replaces-unasked', '_check_converted', 'if target.exists() and not overwrite:',
           'if False:', PREDICT,
           'predict --save-converted replaces a file already there without --overwrite'),
    # --- figures ---------------------------------------------------------------------------
    Mutant('reconstruction-panel-shows-input', 'reconstruction_figure', '_pixels(pair[1], reconstructions[i])',
           '_pixels(pair[1], images[i])', FIGURES,
           'the reconstruction panel shows the input again'),
    Mutant('reconstruction-title-swapped', 'reconstruction_figure', 'pair[0].set_title(f"{classes[labels[i]]} → {classes[predictions[i]]}"',
           'pair[0].set_title(f"{classes[predictions[i]]} → {classes[labels[i]]}"', FIGURES,
           'titles read prediction→label'),
    Mutant('reconstruction-examples-swapped', 'reconstruction_figure', 'correct = np.flatnonzero(predictions == labels)',
           'correct = np.flatnonzero(predictions != labels)', FIGURES,
           "the 'correct' rows show misclassified images"),
    Mutant('perturb-dimension-0-only', 'perturb_capsule', 'shifted[torch.arange(dims), :, torch.arange(dims)] += deltas',
           'shifted[:, :, 0] += deltas', FIGURES,
           'every row perturbs dimension 0'),
    Mutant('perturbation-examples-ignore-predictions', 'perturbation_examples', 'hits = of_class[predictions[of_class] == c]',
           'hits = of_class', FIGURES,
           'a misclassified image may be chosen when a correct one exists'),
    Mutant('perturbation-of-class-0-capsule', 'perturbation_figure_of', 'perturb_capsule(run.model, capsules[i, c], c)',
           'perturb_capsule(run.model, capsules[i, 0], c)', FIGURES,
           'perturbs the class-0 capsule of every image'),
    Mutant('run-predictions-argmin', 'TrainedRun.predictions', 'self.outputs[0].argmax(dim=1)',
           'self.outputs[0].argmin(dim=1)', FIGURES,
           "a trained run's figures use the lowest score as its prediction"),
    Mutant('accuracy-curve-of-training', 'accuracy_figure', 'epochs, errors = _aligned(group, "test_error")',
           'epochs, errors = _aligned(group, "train_loss")', FIGURES,
           'the test-accuracy figure plots training accuracy'),
    # --- tables ------------------------------------------------------------------------------
    Mutant('summary-population-std', 'summary_table', '_round(group.final_test_error.std(ddof=1), digits)',
           '_round(group.final_test_error.std(ddof=0), digits)', FIGURES,
           'std over seeds with ddof = 0'),
    Mutant('final-error-is-best-epoch', 'selection', 'return {"final_test_error": float(scored.test_error.iloc[-1]),',
           'return {"final_test_error": float(scored.test_error.min()),', FIGURES + RECIPES,
           "the reported final error is the best epoch's (selected on the test set)"),
    Mutant('gap-to-paper-from-best', 'summary_table', '_round(group.final_test_error.mean() - reported[0], digits)',
           '_round(group.best_test_error.mean() - reported[0], digits)', FIGURES,
           'the gap to the paper uses the best epochs'),
    Mutant('tables-include-unfinished-runs', 'write_result_tables', 'per_run = run_table([r for r in runs if r.info.get("status") == "complete"])',
           'per_run = run_table(runs)', FIGURES,
           'runs still training are in the result tables'),
    Mutant('paper-table1-misquoted', 'TABLE1', '"routing 3, reconstruction": (0.25, 0.005)',
           '"routing 3, reconstruction": (0.29, 0.005)', FIGURES,
           "Table 1's 0.25% misquoted"),
    Mutant('markdown-pipes-unescaped', 'markdown_table', '.replace("|", "\\\\|")  # one line',
           '  # one line', FIGURES,
           "a '|' in a cell (a command's pipe) breaks the Markdown table"),
    Mutant('best-run-highest-error', 'lowest_final_error', 'return min(runs, key=lambda r: (r.history.test_error.iloc[-1]',
           'return max(runs, key=lambda r: (r.history.test_error.iloc[-1]', FIGURES,
           'the figures show the run with the highest final error'),
    # --- the HTML reports and the lightened notebooks -----------------------------------------
    Mutant('report-rendered-from-lightened-notebook', 'report', 'if is_lightened(notebook):\n        if not target',
           'if False:\n        if not target', REPORTS,
           'make report renders a lightened notebook again: the committed report loses its figures'),
    Mutant('lightening-keeps-svg', 'is_image', 'return mimetype.startswith("image/")',
           'return mimetype == "image/png"', REPORTS,
           'an SVG (or JPEG) figure stays in the lightened notebook'),
    Mutant('report-with-output-prompts', 'html', 'exclude_output_prompt=hide)',
           'exclude_output_prompt=False)', REPORTS,
           'the report without code is not the one nbconvert --no-input writes (Out[n] prompts)'),
    # --- sweeps of runs finished elsewhere, and the hypotheses beside the ablation -----------------
    Mutant('finished-run-of-any-length', 'finished_run', 'run.info.get("summary", {}).get("epochs_done") == config.epochs',
           'True', RECIPES,
           'a run logged complete after fewer epochs counts as done when asked for more'),
    Mutant('finished-run-of-any-setup', 'finished_run', 'and not resume_conflicts(run.config, config))',
           ')', RECIPES,
           'logs of another setup (another lr, seed, recipe) count as this run, done'),
    Mutant('sweep-retrains-finished-runs', 'sweep', 'for config, run in zip(configs, finished) if run is None]',
           'for config, run in zip(configs, finished)]', RECIPES,
           'a sweep tries to retrain runs whose logs came back without checkpoints, and fails on them'),
    Mutant('no-op-sweep-loads-torch', 'run_sweep', '    from .study.studies import study_layers\n',
           '    from .core.speed import resolve_device  # noqa: F401\n    from .study.studies import study_layers\n', ['tests/test_recipes.py::test_a_finished_sweep_run_again_starts_no_process_and_loads_no_torch'],
           'a finished sweep run again loads torch (seconds) to ask whether there is a GPU'),
    Mutant('full-sweep-on-a-cpu', 'run_sweep', 'if unfinished and args.profile == "full"',
           'if False and args.profile == "full"', RECIPES,
           'make on a laptop starts GPU-sized runs on the CPU without being asked'),
    Mutant('comparison-against-previous-group', 'comparison_table', 'base = per_run if base is None else base',
           'base = per_run', RECIPES,
           'each group is compared with the one before it, not with the first'),
    Mutant('misses-predicted-as-labels', 'Evaluation.misses', '"predicted": spelled(self.predictions[index])',
           '"predicted": spelled(self.labels[index])', MISSES,
           'the per-image records say each missed image was predicted as its own label'),
    Mutant('misses-of-the-selected-lost-on-resume', '_train',
           '_selected_misses(log_dir, history, config) if saved else None',
           'None', MISSES,
           'a resumed run forgets which images its selected evaluation missed'),
    Mutant('paired-bootstrap-unpaired', 'bootstrap_interval', 'per_example = wrong_a.mean(axis=0) - wrong_b.mean(axis=0)',
           'per_example = wrong_a.mean(axis=0) - wrong_b.mean(axis=0)[::-1]', PAIRED,
           'the paired comparison pairs each image with another image'),
    Mutant('mcnemar-one-sided', 'mcnemar_p', 'return min(1.0, 2 * tail)', 'return min(1.0, tail)', PAIRED,
           "McNemar's test is one-sided"),
    Mutant('precision-runs-not-fp32', 'precision_configs', 'dataclasses.replace(c, speed="fp32")',
           'c', RECIPES,
           'the precision study repeats the bf16 runs'),
]


def check(mutants: list[Mutant]) -> None:
    """Every mutant's definition exists once, holds its old text once, and the new text differs."""
    names = [m.name for m in mutants]
    stale = [n for n in names if names.count(n) > 1]
    found = definitions(REPO)
    for mutant in mutants:
        place = locate(mutant, found)
        if isinstance(place, str):
            stale.append(f"{mutant.name}: {place}")
        elif mutant.old == mutant.new:
            stale.append(f"{mutant.name}: old and new are the same")
    if stale:
        sys.exit("mutation: stale or duplicate mutants (update tools/mutation.py):\n  " + "\n  ".join(stale))


def copy_tree(destination: Path) -> None:
    """capslib/, tests/ and pyproject.toml (pytest's settings), without bytecode; data/, notebooks/,
    results/ and tools/ linked (tests read the notebooks' parameters, copy committed run logs and load
    the port's bench helper; none writes there)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("capslib", "tests"):
        shutil.copytree(REPO / folder, destination / folder, ignore=ignore)
    for name in ("pyproject.toml", "Makefile"):  # the Makefile: tests compare its run names with capslib's
        shutil.copy2(REPO / name, destination / name)
    for folder in ("data", "notebooks", "results", "tools"):
        (destination / folder).symlink_to(REPO / folder)


def pytest(tree: Path, tests: list[str], timeout: float, stop_at_first: bool = True) -> tuple[str, str]:
    """Run `tests` in `tree`: ('passed' | 'failed' | 'timeout', the failing tests or '')."""
    # No bytecode: a mutant of the same length written within the same second as the original
    # would otherwise be hidden behind (or leave behind) a stale .pyc.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", *(["-x"] if stop_at_first else []), "-q", "-p", "no:cacheprovider",
               "-m", "not notebooks", *tests]
    process = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "timeout", ""
    finally:
        if process.poll() is None:  # Ctrl-C: stop the whole test process group too
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.returncode == 0:
        return "passed", ""
    if process.returncode in (4, 5):  # a usage error, or no test collected: a mistake in a selection
        raise RuntimeError(f"pytest exited with status {process.returncode}:\n{output[-3000:]}")
    failed = [line.split(" - ")[0] for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return "failed", "\n".join(failed) or f"(pytest exit status {process.returncode})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="keywords", action="append", metavar="TEXT",
                        help="only the mutants whose name contains TEXT (repeatable: any of them)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant's tests (a timeout kills it)")
    parser.add_argument("--min-score", type=float, default=95.0, help="exit status 1 below this %% killed")
    parser.add_argument("--all-failures", action="store_true",
                        help="run each mutant's tests to the end and list every test that fails (slower)")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.keywords or any(k in m.name for k in args.keywords)]
    check(MUTANTS)
    if args.list:
        found = definitions(REPO)
        for m in mutants:
            path = found[m.where][0][0].relative_to(REPO)
            print(f"{m.name:50} {m.where:28} {str(path):28} {m.why}")
        return 0
    if not mutants:
        sys.exit(f"mutation: no mutant name contains any of {args.keywords}")

    started = time.perf_counter()
    survivors, killed = [], 0
    with tempfile.TemporaryDirectory(prefix="capslib-mutation-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        found = subprocess.run([sys.executable, "-c", "import capslib; print(capslib.__file__)"], cwd=tree,
                               env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
        if not found.stdout.strip().startswith(str(tree)):
            sys.exit(f"mutation: the copy's capslib is not the one imported ({found.stdout.strip() or found.stderr})")
        selected = list(dict.fromkeys(t for m in mutants for t in m.tests))
        print(f"baseline: {len(selected)} test selections on the unmutated copy ...", flush=True)
        outcome, test = pytest(tree, selected, args.timeout * 2)
        if outcome != "passed":
            sys.exit(f"mutation: the tests fail without any mutant ({outcome} {test}); fix them first")
        print(f"baseline passed ({time.perf_counter() - started:.0f} s)", flush=True)

        found = definitions(tree)
        for number, mutant in enumerate(mutants, 1):
            path, start, end = locate(mutant, found)
            original = path.read_text()
            tic = time.perf_counter()
            try:
                path.write_text(mutated(original, mutant, start, end))
                outcome, test = pytest(tree, mutant.tests, args.timeout, not args.all_failures)
            finally:
                path.write_text(original)
            verdict = "SURVIVED" if outcome == "passed" else "killed" if outcome == "failed" else "timeout"
            killed += outcome != "passed"
            if outcome == "passed":
                survivors.append(mutant)
            seconds = time.perf_counter() - tic
            print(f"[{number:2}/{len(mutants)}] {verdict:8} {mutant.name:50} {seconds:5.1f} s  "
                  + test.replace("\n", "\n" + " " * 72), flush=True)

    score = 100 * killed / len(mutants)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nmutation score: {killed}/{len(mutants)} killed ({score:.1f}%) in {minutes:.1f} min")
    for mutant in survivors:
        print(f"  survived: {mutant.name} ({mutant.where}): {mutant.why}")
    return 0 if score >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
