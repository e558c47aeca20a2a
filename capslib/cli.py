"""`capslib train | sweep | evaluate | reconstruct | perturb | predict | bench | report` (also `python -m capslib`).

The flags of the TensorFlow study this project follows are accepted as its README writes them
(`--mnist-root-path=/path/ --batch-size=128 --routing-frequency=3 --reconstruction-loss=True
--ckpt-dir --logs-dir --ckpt-path --meta-path --result-path`). User mistakes end with one line on
stderr and exit status 2, before any work; a diverged run ends with status 1.

The training flags are TrainConfig's fields (capslib/core/config.py), derived from their declarations:
a flag left out takes the value of the chosen --recipe, so the command line restates no default, no
choice list and no range of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from .core.config import TrainConfig, check, kind
from .core.errors import CapslibError, Terminated, TrainingDiverged, raise_on_sigterm
from .study.cluster import SlurmSettings, flag as slurm_flag, sbatch_line_problem, settings_from
from .study.profiles import PROFILES
from .study.studies import STUDIES

EXIT_USAGE, EXIT_DIVERGED = 2, 1
TRUE, FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}


def parse_bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def field_parser(f: dataclasses.Field, owner: type = TrainConfig):
    """An argparse type for field `f` of `owner` (TrainConfig, or cluster.SlurmSettings): its type
    ('none' for None where the field allows it), checked against its declaration (config.check); a
    mistake reads 'expected ...'."""
    expected, nullable = kind(f, owner)

    def parse(text: str):
        if nullable and text.lower() == "none":
            return None
        try:
            value = parse_bool(text) if expected is bool else expected(text)
        except (ValueError, argparse.ArgumentTypeError):
            value = text
        problem = check(f, value, owner)  # a text that did not convert fails here too, with the type it must be
        if problem:
            raise argparse.ArgumentTypeError(f"expected {problem}, got {text!r}")
        return value
    return parse


def existing_folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text} does not exist")
    return path


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}")
    return value


def minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of minutes > 0, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (no usage dump) and exits with status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _inference_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt-path", type=existing_path, required=True, metavar="PATH",
                   help="a checkpoint (.pt), or a run folder (its last.pt)")
    p.add_argument("--meta-path", metavar="PATH",
                   help="accepted for the TensorFlow study's commands and ignored: a capslib checkpoint "
                        "carries its model's definition, so no .meta graph file is needed")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--test-subset", type=positive_int, metavar="N", help="use only the first N test images")
    p.add_argument("--mnist-root-path", "--data-root", dest="data_root", type=existing_folder, metavar="DIR",
                   help="folder with the four IDX files (default: the repository's data/<dataset>)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the MD5 check of the data files (for other copies of the datasets)")


def _result_flags(p: argparse.ArgumentParser, suffix: str, required: bool) -> None:
    p.add_argument("--result-path", required=required, metavar="FILE", help=f"where to write the result ({suffix})")
    p.add_argument("--overwrite", action="store_true", help="replace --result-path if it exists")


SWEEP_SETS = ("recipe", "ckpt_dir", "logs_dir")  # a sweep's studies set these for each run


def _training_flags(p: argparse.ArgumentParser, leave_out: tuple[str, ...] = ()) -> None:
    """A flag for every TrainConfig field, as config.py declares it: --<field-with-dashes> and its
    aliases, its help with the default (and the official recipe's value where it differs). A flag left
    out of the command line sets nothing: the run takes the recipe's value (argparse.SUPPRESS)."""
    paper, official = TrainConfig(), TrainConfig.from_recipe("official")
    for f in dataclasses.fields(TrainConfig):
        if f.name in leave_out:
            continue
        meta, (expected, _) = f.metadata, kind(f)
        default, other = getattr(paper, f.name), getattr(official, f.name)
        shown = [f"default {default}"] if default is not None else []
        shown += [f"official recipe {other}"] if other != default else []
        options = dict(dest=f.name, default=argparse.SUPPRESS, type=field_parser(f), metavar=meta["metavar"],
                       help=meta["help"] + (f" ({'; '.join(shown)})" if shown else ""))
        if meta["choices"] is not None:
            options.update(choices=meta["choices"], metavar=None)
        if expected is bool:  # --flag alone means True; --flag False, --flag no, ... as the seed study writes them
            options.update(nargs="?", const=True, metavar="BOOL")
        p.add_argument(f"--{f.name.replace('_', '-')}", *meta["flags"], **options)
    if "verify_checksums" not in leave_out:
        p.add_argument("--no-verify", dest="verify_checksums", action="store_false", default=argparse.SUPPRESS,
                       help="skip the MD5 check of the data files (--verify-checksums False)")


EXECUTORS = ("local", "slurm")


def _slurm_flags(group) -> None:
    """--slurm-config, and a flag --slurm-<setting> for every field of cluster.SlurmSettings, as it is
    declared; a flag left out sets nothing (the file's value, else the setting's default)."""
    group.add_argument("--slurm-config", metavar="FILE",
                       help="a TOML file of the settings below, keyed by their names without --slurm- "
                            "(partition = \"gpu\"); flags override it")
    for f in dataclasses.fields(SlurmSettings):
        if f.name == "sbatch":
            group.add_argument(slurm_flag(f.name), dest="slurm_sbatch", action="append", type=sbatch_option,
                               default=argparse.SUPPRESS, metavar=f.metadata["metavar"], help=f.metadata["help"])
            continue
        default = f.default
        group.add_argument(slurm_flag(f.name), dest=f"slurm_{f.name}", type=field_parser(f, SlurmSettings),
                           default=argparse.SUPPRESS,
                           metavar=f.metadata["metavar"],
                           help=f.metadata["help"] + (f" (default {default})" if default is not None else ""))


def sbatch_option(text: str) -> str:
    problem = sbatch_line_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def given_slurm_settings(args) -> dict:
    """The Slurm settings that flags set explicitly, by their names in cluster.SlurmSettings."""
    return {f.name: getattr(args, f"slurm_{f.name}") for f in dataclasses.fields(SlurmSettings)
            if hasattr(args, f"slurm_{f.name}")}


def given_fields(args) -> dict:
    """The TrainConfig fields that flags set explicitly, each as given (None included: `--lr-decay-steps
    none` is honoured); the rest keep the recipe's values."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if f.name != "recipe" and hasattr(args, f.name)}


def config_from_args(args) -> TrainConfig:
    """The TrainConfig of parsed train flags: the recipe's values, then every flag given."""
    return TrainConfig.from_recipe(getattr(args, "recipe", "paper"), **given_fields(args))


def build_parser() -> Parser:
    parser = Parser(prog="capslib", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train a CapsNet (or the baseline CNN)")
    _training_flags(train)
    train.add_argument("--resume", action="store_true", help="continue the run in --ckpt-dir if it has a checkpoint")
    train.add_argument("--show-config", action="store_true",
                       help="print the run's config, each value with the layer that set it, and stop")

    studies = "\n".join(f"  {study.name:<16}{study.about}" for study in STUDIES.values())
    sweep = commands.add_parser("sweep", help="train a study's set of runs, one per free GPU (or CPU)",
                                description=f"Train a declared set of runs (capslib/study/studies.py):\n{studies}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("study", help="the set of runs: " + ", ".join(STUDIES) + " (or several, comma-separated)")
    _training_flags(sweep, leave_out=SWEEP_SETS)
    sweep.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    sweep.add_argument("--profile", default="full", choices=tuple(PROFILES),
                       help="run sizes (capslib/study/profiles.py): full keeps each study's own; laptop is 2 "
                            "epochs on a CPU; quick and tiny are small CPU runs (default full)")
    sweep.add_argument("--jobs", type=positive_int,
                       help="runs at a time, with the local executor (default 1; one per GPU: each run claims a "
                            "free one)")
    sweep.add_argument("--runs-per-gpu", type=positive_int, metavar="K",
                       help="runs that may share one GPU (default 1: a long run fills a GPU; sharing pays for short "
                            "runs only, docs/speed.md); with --jobs, K runs per GPU at most")
    sweep.add_argument("--runs-dir", default="runs", metavar="DIR", help="checkpoints go to DIR/<study>/<run>")
    sweep.add_argument("--results-dir", default="results", metavar="DIR", help="logs go to DIR/<study>/<run>")
    sweep.add_argument("--time-limit", type=minutes, metavar="MINUTES",
                       help="stop every run at its first evaluation after this, with a checkpoint (resume later)")
    sweep.add_argument("--only", metavar="RUN", action="append",
                       help="train only the run of this name (repeatable; e.g. one per task of a job array)")
    sweep.add_argument("--list", action="store_true", help="print the run folders and stop")
    sweep.add_argument("--show-config", action="store_true",
                       help="print each run's config, each value with the layer that set it (default, recipe, "
                            "study, profile, given flags, run folder), and stop")
    sweep.add_argument("--status", action="store_true",
                       help="print each run's state (complete, running, pending, stopped, failed, not started: from "
                            "its folders and the scheduler), epochs and attempts, and stop")
    sweep.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: here, --jobs at a time; slurm: one Slurm job array, a task per unfinished run "
                            "(capslib/study/slurm.py), waiting until every task has ended (default local)")
    _slurm_flags(sweep.add_argument_group("Slurm, with --executor slurm (capslib/study/cluster.py)"))

    evaluate = commands.add_parser("evaluate", help="test error (and confusion matrix) of a checkpoint, on the "
                                                    "test sets its training scored")
    _inference_flags(evaluate)
    evaluate.add_argument("--test-pairs", type=positive_int, metavar="N",
                          help="MultiMNIST: test pairs per test image (default: the run's own; 1000: the paper's 10M)")
    _result_flags(evaluate, "JSON", required=False)

    reconstruct = commands.add_parser("reconstruct", help="reconstruction grid of a checkpoint (PNG)")
    _inference_flags(reconstruct)
    _result_flags(reconstruct, "PNG", required=True)

    perturb = commands.add_parser("perturb", help="dimension-perturbation grid of a checkpoint (PNG)")
    _inference_flags(perturb)
    _result_flags(perturb, "PNG", required=True)

    from .core.predict import CONVERSION
    predict = commands.add_parser(
        "predict", help="classify your own images (PNG or JPEG, converted to 28×28 grey like MNIST)",
        description="Print the predicted class and the 10 class scores (capsule lengths) of each image.\n\n"
                    + CONVERSION, formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("images", nargs="+", type=existing_path, metavar="IMAGE", help="PNG or JPEG files")
    predict.add_argument("--ckpt-path", type=existing_path, required=True, metavar="PATH",
                         help="a checkpoint (.pt), or a run folder (its last.pt)")
    predict.add_argument("--invert", action="store_true",
                         help="the images have dark ink on a light ground (a pen on paper): invert them first")
    predict.add_argument("--save-converted", metavar="DIR",
                         help="also write each converted image to DIR, as <name>.28x28.png (40x40 for an expanded-MNIST "
                              "model): what the model saw")
    predict.add_argument("--overwrite", action="store_true", help="replace converted images already in --save-converted")
    predict.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")

    bench = commands.add_parser("bench", help="training throughput of each speed path (CUDA, or --device cpu)")
    bench.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                       help="cpu: the CPU paths beside the XifengGuo port, interleaved rounds (benchmarks-cpu.md)")
    bench.add_argument("--paths", help="comma-separated speed paths (default: fp32,tf32,bf16,compile,graph; "
                                       "on cpu fp32,bf16,compile)")
    bench.add_argument("--batch-sizes", default="128,512", help="comma-separated; extra sizes use the last path "
                                                                "(cpu: the first size only)")
    bench.add_argument("--steps", type=positive_int, help="timed steps (default 100; cpu: per round, 5)")
    bench.add_argument("--rounds", type=positive_int, default=3, help="cpu: interleaved rounds, the best reported")
    bench.add_argument("--out-dir", default="results", metavar="DIR", help="where benchmarks.md/.csv go")
    bench.add_argument("--profile", action="store_true", help="also print torch.profiler's top kernels")

    report = commands.add_parser("report", help="render executed notebooks as HTML reports, then lighten them "
                                                "(capslib/study/reports.py)")
    report.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK")
    report.add_argument("--html-dir", type=Path, required=True, help="the reports without code")
    report.add_argument("--with-code-dir", type=Path, help="the reports with code (optional)")
    report.add_argument("--figures-dir", type=Path, help="the saved PNGs a replaced image may be identical to")
    return parser


def run_train(args) -> None:
    from .core.config import recipe_layers
    from .core.layout import placed
    from .core.runs import summary_line
    from .core.train import train

    config = placed(config_from_args(args)).validate()  # --ckpt-dir, --logs-dir or runs/<run name>
    if args.show_config:
        layers = recipe_layers(getattr(args, "recipe", "paper"), given_fields(args))
        print(shown_config(layers + [("run folder", config, ("ckpt_dir", "logs_dir"))]))
        return
    args.ckpt_dir = config.ckpt_dir  # for the line an interruption prints
    run = train(config, resume=args.resume, progress=sys.stderr.isatty())
    print(f"{summary_line(run.info['summary'])}; run folder {config.log_dir}")


def run_sweep(args) -> int:
    from .study.studies import study_layers
    from .study.sweep import finished_run

    slurm = _check_executor_flags(args)  # before anything is read or submitted
    for flag, folder in (("--runs-dir", args.runs_dir), ("--results-dir", args.results_dir)):
        _check_folder_flag(flag, Path(folder))
    try:
        seeds = [positive_seed(s) for s in args.seeds.split(",")]
    except argparse.ArgumentTypeError:
        raise CapslibError(f"--seeds: expected comma-separated seeds, got {args.seeds!r}") from None
    if len(set(seeds)) != len(seeds):
        raise CapslibError(f"--seeds: {args.seeds} names a seed twice")
    runs = study_layers(args.study, seeds, Path(args.runs_dir), Path(args.results_dir), args.profile,
                        **given_fields(args))
    if args.only:
        names = {Path(layers[-1][1].log_dir).name for _, layers in runs}
        unknown = [name for name in args.only if name not in names]
        if unknown:
            raise CapslibError(f"--only: {unknown[0]} is not a run of {args.study} (see --list)")
        runs = [(study, layers) for study, layers in runs if Path(layers[-1][1].log_dir).name in args.only]
    configs = [layers[-1][1] for _, layers in runs]
    if args.list:
        print("\n".join(str(c.log_dir) for c in configs))
        return 0
    if args.show_config:
        from .study.studies import protocol

        print("\n\n".join(shown_config(layers, protocol(study)) for study, layers in runs))
        return 0
    if args.status:
        from .study.slurm import status
        return status(configs, Path(args.runs_dir))
    device = getattr(args, "device", "auto")
    if slurm is not None:
        from .study.slurm import gpus_per_run, sweep_on_slurm

        if args.profile == "full" and device == "auto" and gpus_per_run(slurm, configs) == 0:
            raise CapslibError(f"{slurm_flag('gpus')} 0: full-profile runs would train on the nodes' CPUs, for hours "
                               "each; ask for a GPU, or pass --device cpu to train them there anyway")
        argv = [a for a in args.argv if a != "--status"]
        return sweep_on_slurm(configs, Path(args.runs_dir), slurm, job_name=f"capslib-{args.study}",
                              status_command=f"capslib {shlex.join(argv)} --status")
    from .study.sweep import sweep

    unfinished = [c for c in configs if finished_run(c) is None]
    if unfinished and args.profile == "full" and device == "auto" and _no_cuda():
        # `make tables` on a laptop must not start hours of training per run without being asked
        raise CapslibError(f"sweep {args.study}: {len(unfinished)} of {len(configs)} runs are not finished "
                           f"(first: {unfinished[0].log_dir}) and no CUDA GPU is visible; full-profile runs take "
                           "hours each on a CPU: run them on a GPU machine, or pass --device cpu to train here "
                           "anyway (PROFILE=quick for small runs)")
    deadline = time.time() + 60 * args.time_limit if args.time_limit else None
    if args.runs_per_gpu:  # read by each run's GPU claim, in this process and its workers
        from .core.gpus import RUNS_PER_GPU

        os.environ[RUNS_PER_GPU] = str(args.runs_per_gpu)
    return sweep(configs, args.jobs or 1, deadline=deadline)


def _check_folder_flag(flag: str, folder: Path) -> None:
    """A folder a sweep writes runs under: one line naming the flag if it, or a folder above it, is a file
    (each run would otherwise fail on its own, naming the run's --ckpt-dir or --logs-dir instead)."""
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            raise CapslibError(f"{flag} {folder}: {path} is a file, not a folder")


def shown_config(layers, protocol: dict | None = None) -> str:
    """A run's folder, then its config, each value with the layer that set it (config.set_by), then what
    its name's digest stands for (layout.unnamed_choices, within the study's `protocol`)."""
    from .core.config import show_config
    from .core.layout import name_digest, unnamed_choices

    config = layers[-1][1]
    choices = unnamed_choices(config, protocol)
    digest = (f"{name_digest(choices)}: " + ", ".join(f"{k} {v!r}" for k, v in choices.items()) if choices
              else "none: the readable name says every choice")
    return f"{config.log_dir}\n" + show_config(layers, {"name digest": digest})


def _check_executor_flags(args) -> SlurmSettings | None:
    """The checked Slurm settings with --executor slurm (None with local): one line for a flag of the other
    executor, or a setting Slurm would not take."""
    given = given_slurm_settings(args)
    if args.executor != "slurm":
        named = [slurm_flag(name) for name in given] + (["--slurm-config"] if args.slurm_config else [])
        if named:
            raise CapslibError(f"{named[0]} is a setting of --executor slurm")
        return None
    for name, instead in (("jobs", "--slurm-max-running"), ("time_limit", "--slurm-time"),
                          ("runs_per_gpu", "--slurm-gpus (Slurm gives each run its GPUs)")):
        if getattr(args, name, None) is not None:
            raise CapslibError(f"--{name.replace('_', '-')} is for the local executor; with --executor slurm "
                               f"use {instead}")
    return settings_from(args.slurm_config, given)


def _no_cuda() -> bool:
    from .core.speed import resolve_device  # torch: only when a run is left to train

    return resolve_device("auto").type == "cpu"


positive_seed = field_parser(next(f for f in dataclasses.fields(TrainConfig) if f.name == "seed"))


def _check_result_path(args) -> None:
    if args.result_path and Path(args.result_path).is_dir():  # --overwrite would not help: say what would
        raise CapslibError(f"--result-path {args.result_path} is a folder; give the path of a file in it")
    if args.result_path and Path(args.result_path).exists() and not args.overwrite:
        raise CapslibError(f"--result-path {args.result_path} exists; pass --overwrite to replace it")


def _load(args):
    from .study.analysis import load_trained

    _check_result_path(args)
    run = load_trained(args.ckpt_path, args.data_root, args.device, args.test_subset, args.verify)
    _note_meta_path(args)
    return run


def _note_meta_path(args) -> None:
    if args.meta_path:
        print("note: --meta-path is ignored: capslib checkpoints carry their model definition", file=sys.stderr)


def run_evaluate(args) -> None:
    from .study.analysis import score_checkpoint
    from .core.files import atomic_write_text
    from .core.provenance import provenance
    from .core.generated import AFFINE_LABEL

    _check_result_path(args)
    scored = score_checkpoint(args.ckpt_path, args.data_root, args.device, args.test_subset, args.test_pairs,
                              args.verify)
    _note_meta_path(args)
    config, test = scored.config, scored.results["test"]
    names = {"test": f"{config.dataset} test", "affine": AFFINE_LABEL}
    for name, result in scored.results.items():
        counted = f"{len(result.misclassified)} of {len(result.labels)} misclassified"
        if not result.single_label:
            counted += (f"; {scored.test_images} test images × {config.test_pairs} pairs, a pair correct iff its "
                        "two labels are the two highest scores")
        print(f"{args.ckpt_path}: {names[name]} error {result.error_percent:.2f}% ({counted}), epoch {scored.epoch}")
    if test.single_label:
        print("confusion matrix (rows: true, columns: predicted):")
        print(test.confusion_matrix())
    else:
        print("no confusion matrix: each MultiMNIST example has two labels")
    if args.result_path:
        report = {"checkpoint": str(args.ckpt_path), "epoch": scored.epoch, "dataset": config.dataset,
                  "test_images": scored.test_images}
        if not test.single_label:
            report["test_pairs"] = config.test_pairs  # per test image
        for name, result in scored.results.items():
            report.update({f"{name}_examples": len(result.labels), f"{name}_accuracy": result.accuracy,
                           f"{name}_error_percent": result.error_percent, f"{name}_loss": result.loss})
        report["confusion_matrix"] = test.confusion_matrix().tolist() if test.single_label else None
        report["provenance"] = provenance(scored.device)
        atomic_write_text(args.result_path, json.dumps(report, indent=2) + "\n")


def run_figure(args) -> None:
    from .study.analysis import perturbation_figure_of, reconstruction_figure_of
    from .study.figures import save_figure

    make_figure = {"reconstruct": reconstruction_figure_of, "perturb": perturbation_figure_of}[args.command]
    run = _load(args)
    print(f"wrote {save_figure(make_figure(run), args.result_path)}")


def run_predict(args) -> None:
    from .core.checkpoint import load_model
    from .core.datasets import dataset_info
    from .core.evaluate import predict
    from .core.predict import in_frame, load_images, save_grey
    from .core.speed import resolve_device

    folder = Path(args.save_converted) if args.save_converted else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise CapslibError(f"--save-converted {folder} is a file; give a folder to write the converted images to")
    images = load_images(args.images, args.invert)  # every image checked before the model loads
    device = resolve_device(args.device)
    model, config, _ = load_model(args.ckpt_path, device)
    images = in_frame(images, config.dataset, args.ckpt_path)  # what the model reads
    if folder is not None:  # checked before anything is written or printed
        size = images.shape[-1]
        converted = [folder / f"{Path(path).stem}.{size}x{size}.png" for path in args.images]
        _check_converted(converted, args.images, args.overwrite)
    classes = dataset_info(config.dataset).classes
    scores = predict(model, images.to(device))[0].cpu()
    kind = "capsule lengths" if config.model == "capsnet" else "softmax probabilities"
    if config.model != "capsnet":
        scores = scores.softmax(dim=1)
    if folder is not None:
        for image, target in zip(images, converted):
            save_grey(image, target)
    for path, row in zip(args.images, scores):
        best = int(row.argmax())
        listed = "  ".join(f"{name} {value:.3f}" for name, value in zip(classes, row.tolist()))
        print(f"{path}: {classes[best]}  ({kind}: {listed})")


def _check_converted(converted: list[Path], images: list[Path], overwrite: bool) -> None:
    """The converted images' files: never one written twice (two images of one name), nor one that exists
    replaced without --overwrite, nor a folder in the way."""
    seen = {}
    for target, image in zip(converted, images):
        if target in seen:
            raise CapslibError(f"--save-converted: {seen[target]} and {image} would both be written to {target}; "
                               "rename one, or predict them in two commands")
        seen[target] = image
        if target.is_dir():
            raise CapslibError(f"--save-converted: {target} is a folder, where the converted {image} would go")
        if target.exists() and not overwrite:
            raise CapslibError(f"--save-converted: {target} exists; pass --overwrite to replace it")


def run_report(args) -> None:
    from .study.reports import report_all

    for line in report_all(args.notebooks, args.html_dir, args.with_code_dir, args.figures_dir):
        print(line, flush=True)


def run_bench(args) -> None:
    from .study.bench import default_cases, profile_step, run_benchmark, write_benchmark
    from .core.speed import SPEED_PATHS

    cpu = args.device == "cpu"
    paths = tuple(p.strip() for p in (args.paths or ("fp32,bf16,compile" if cpu else "fp32,tf32,bf16,compile,graph"))
                  .split(","))
    unknown = [p for p in paths if p not in SPEED_PATHS]
    if unknown:
        raise CapslibError(f"--paths: unknown speed path {unknown[0]!r}; choose from {', '.join(SPEED_PATHS)}")
    try:
        sizes = tuple(positive_int(b) for b in args.batch_sizes.split(","))
    except argparse.ArgumentTypeError as err:
        raise CapslibError(f"--batch-sizes: {err}") from None
    if cpu:
        from .study.bench import run_cpu_benchmark, write_cpu_benchmark
        cuda_only = [p for p in paths if SPEED_PATHS[p].cuda_only]
        if cuda_only:
            cpu_paths = ", ".join(name for name, path in SPEED_PATHS.items() if not path.cuda_only)
            raise CapslibError(f"--paths: {cuda_only[0]} needs a CUDA device; on a CPU choose from {cpu_paths}")
        steps = args.steps or 5
        table = run_cpu_benchmark(paths, batch_size=sizes[0], steps=steps, rounds=args.rounds)
        print(f"wrote {write_cpu_benchmark(table, Path(args.out_dir), steps, args.rounds)}")
        return
    table = run_benchmark(default_cases(paths, batch_sizes=sizes), steps=args.steps or 100)
    print(f"wrote {write_benchmark(table, Path(args.out_dir), args.steps or 100)}")
    if args.profile:
        print(profile_step("compile" if "compile" in paths else paths[-1]))


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C anywhere, in the imports that a command pulls in too, is one line, never a traceback; so is
    # SIGTERM (kill, scancel, a sweep stopping its runs), raised as Terminated, a KeyboardInterrupt.
    args = None
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    previous = raise_on_sigterm() if in_main_thread else None
    try:
        args = build_parser().parse_args(argv)
        args.argv = sys.argv[1:] if argv is None else list(argv)
        return _run_command(args)
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"capslib{f' {args.command}' if args else ''}: {_interrupted(args, terminated)}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except BrokenPipeError:
        # whoever read our output stopped (`capslib sweep --list | head -1`): stop quietly, as Unix tools
        # do; stdout goes to /dev/null so that Python's own flush at exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)  # main() may be called in a longer process (tests, notebooks)


def _run_command(args) -> int:
    handlers = {
        "train": run_train, "sweep": run_sweep, "evaluate": run_evaluate, "predict": run_predict,
        "bench": run_bench, "reconstruct": run_figure, "perturb": run_figure, "report": run_report,
    }
    try:
        status = handlers[args.command](args)
    except TrainingDiverged as err:
        print(f"capslib {args.command}: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except CapslibError as err:
        print(f"capslib {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return status or 0


def _interrupted(args, terminated: bool = False) -> str:
    """What an interrupted command leaves behind, as it is: for train, the checkpoint to resume, if any;
    for sweep, runs that the same command continues."""
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    if args is not None and args.command == "sweep" and not args.list:
        return f"{how}; its runs stopped, each keeping its last checkpoint: run the same command again to continue them"
    if args is None or args.command != "train" or not args.ckpt_dir:
        return how
    from .core.layout import LAST

    last = Path(args.ckpt_dir) / LAST
    if last.is_file():
        return f"{how}; the last checkpoint written, {last}, is kept: add --resume to continue from it"
    return f"{how} before the run's first checkpoint: {args.ckpt_dir} holds no checkpoint to resume"


if __name__ == "__main__":
    sys.exit(main())
