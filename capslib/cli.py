"""`capslib train | evaluate | reconstruct | perturb | predict | bench` (also `python -m capslib`).

The flags of the TensorFlow study this project follows are accepted as its README writes them
(`--mnist-root-path=/path/ --batch-size=128 --routing-frequency=3 --reconstruction-loss=True
--ckpt-dir --logs-dir --ckpt-path --meta-path --result-path`). User mistakes end with one line on
stderr and exit status 2, before any work; a diverged run ends with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import CapslibError, TrainingDiverged

EXIT_USAGE, EXIT_DIVERGED = 2, 1
TRUE, FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}


def parse_bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


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


class Parser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (no usage dump) and exits with status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _data_flags(p: argparse.ArgumentParser, dataset_default: str | None) -> None:
    p.add_argument("--mnist-root-path", "--data-root", dest="data_root", type=existing_folder, metavar="DIR",
                   help="folder with the four IDX files (default: the repository's data/<dataset>)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the MD5 check of the data files (for other copies of the datasets)")
    if dataset_default:
        p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default=dataset_default)


def _inference_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt-path", type=existing_path, required=True, metavar="PATH",
                   help="a checkpoint (.pt), or a run folder (its last.pt)")
    p.add_argument("--meta-path", metavar="PATH",
                   help="accepted for the TensorFlow study's commands and ignored: a capslib checkpoint "
                        "carries its model's definition, so no .meta graph file is needed")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--test-subset", type=positive_int, metavar="N", help="use only the first N test images")
    _data_flags(p, dataset_default=None)


def _result_flags(p: argparse.ArgumentParser, suffix: str, required: bool) -> None:
    p.add_argument("--result-path", required=required, metavar="FILE", help=f"where to write the result ({suffix})")
    p.add_argument("--overwrite", action="store_true", help="replace --result-path if it exists")


def build_parser() -> Parser:
    parser = Parser(prog="capslib", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train a CapsNet (or the baseline CNN)")
    _data_flags(train, dataset_default="mnist")
    train.add_argument("--model", choices=("capsnet", "baseline"), default="capsnet")
    train.add_argument("--routing-frequency", "--routing", dest="routing", type=positive_int, default=3,
                       metavar="N", help="routing iterations (the paper: 1 or 3)")
    train.add_argument("--reconstruction-loss", dest="reconstruction", type=parse_bool, nargs="?", const=True,
                       default=True, metavar="BOOL", help="add 0.0005 × the reconstruction SSE (default True)")
    train.add_argument("--batch-size", type=positive_int, default=128)
    train.add_argument("--epochs", type=positive_int, default=50)
    train.add_argument("--lr", type=positive_float, default=1e-3, help="initial learning rate")
    train.add_argument("--lr-decay", type=positive_float, default=0.95, help="lr of epoch e = lr · decay^e")
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--ckpt-dir", metavar="DIR", help="checkpoints (default runs/<dataset>_<config>_seed<N>)")
    train.add_argument("--logs-dir", metavar="DIR", help="metrics.csv, run.json, TensorBoard (default: --ckpt-dir)")
    train.add_argument("--resume", action="store_true", help="continue the run in --ckpt-dir if it has a checkpoint")
    train.add_argument("--train-subset", type=positive_int, metavar="N", help="first N training images (quick runs)")
    train.add_argument("--test-subset", type=positive_int, metavar="N", help="first N test images (quick runs)")
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    train.add_argument("--speed", default="auto", choices=("auto", "fp32", "tf32", "bf16", "compile", "graph"),
                       help="auto: graph on CUDA, fp32 on CPU (see capslib/speed.py)")
    train.add_argument("--detach-routing", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                       help="stop gradients through all but the last routing iteration (XifengGuo's port)")

    evaluate = commands.add_parser("evaluate", help="test error and confusion matrix of a checkpoint")
    _inference_flags(evaluate)
    _result_flags(evaluate, "JSON", required=False)

    reconstruct = commands.add_parser("reconstruct", help="reconstruction grid of a checkpoint (PNG)")
    _inference_flags(reconstruct)
    _result_flags(reconstruct, "PNG", required=True)

    perturb = commands.add_parser("perturb", help="dimension-perturbation grid of a checkpoint (PNG)")
    _inference_flags(perturb)
    _result_flags(perturb, "PNG", required=True)

    from .predict import CONVERSION
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
                         help="also write each converted 28×28 image to DIR (as <name>.28x28.png): what the model saw")
    predict.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")

    bench = commands.add_parser("bench", help="training throughput of each speed path (CUDA)")
    bench.add_argument("--paths", default="fp32,tf32,bf16,compile,graph", help="comma-separated speed paths")
    bench.add_argument("--batch-sizes", default="128,512", help="comma-separated; extra sizes use the last path")
    bench.add_argument("--steps", type=positive_int, default=100)
    bench.add_argument("--out-dir", default="results", metavar="DIR", help="where benchmarks.md/.csv go")
    bench.add_argument("--profile", action="store_true", help="also print torch.profiler's top kernels")
    return parser


def run_train(args) -> None:
    from .config import TrainConfig
    from .runs import run_name
    from .train import train

    config = TrainConfig(
        dataset=args.dataset, data_root=str(args.data_root) if args.data_root else None, model=args.model,
        routing_iterations=args.routing, reconstruction=args.reconstruction, detach_routing=args.detach_routing,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay, seed=args.seed,
        train_subset=args.train_subset, test_subset=args.test_subset, verify_checksums=args.verify,
        logs_dir=args.logs_dir, device=args.device, speed=args.speed)
    config.ckpt_dir = args.ckpt_dir or args.logs_dir or str(Path("runs") / run_name(config))
    run = train(config, resume=args.resume, progress=sys.stderr.isatty())
    summary = run.info["summary"]
    print(f"final test error {summary['final_test_error']:.2f}% after {summary['epochs_done']} epochs "
          f"(best {summary['best_test_error']:.2f}% at epoch {summary['best_epoch']}); run folder {config.log_dir}")


def _check_result_path(args) -> None:
    if args.result_path and Path(args.result_path).exists() and not args.overwrite:
        raise CapslibError(f"--result-path {args.result_path} exists; pass --overwrite to replace it")


def _load(args):
    from .analysis import load_trained

    _check_result_path(args)
    run = load_trained(args.ckpt_path, args.data_root, args.device, args.test_subset, args.verify)
    if args.meta_path:
        print("note: --meta-path is ignored: capslib checkpoints carry their model definition", file=sys.stderr)
    return run


def run_evaluate(args) -> None:
    from .files import atomic_write_text
    from .provenance import provenance

    run = _load(args)
    result = run.evaluation
    print(f"{args.ckpt_path}: {run.config.dataset} test error {result.error_percent:.2f}% "
          f"({len(result.misclassified)} of {len(result.labels)} misclassified), epoch {run.epoch}")
    print("confusion matrix (rows: true, columns: predicted):")
    print(result.confusion_matrix())
    if args.result_path:
        atomic_write_text(args.result_path, json.dumps({
            "checkpoint": str(args.ckpt_path), "epoch": run.epoch, "dataset": run.config.dataset,
            "test_images": len(result.labels), "test_accuracy": result.accuracy,
            "test_error_percent": result.error_percent, "confusion_matrix": result.confusion_matrix().tolist(),
            "provenance": provenance(run.test_images.device)}, indent=2) + "\n")


def run_figure(args, make_figure) -> None:
    from .figures import save_figure

    run = _load(args)
    print(f"wrote {save_figure(make_figure(run), args.result_path)}")


def run_predict(args) -> None:
    from .checkpoint import load_model
    from .data import dataset_info
    from .evaluate import predict
    from .predict import load_images, save_grey
    from .speed import resolve_device

    images = load_images(args.images, args.invert)  # every image checked before the model loads
    device = resolve_device(args.device)
    model, config, _ = load_model(args.ckpt_path, device)
    classes = dataset_info(config.dataset).classes
    scores = predict(model, images.to(device))[0].cpu()
    kind = "capsule lengths" if config.model == "capsnet" else "softmax probabilities"
    if config.model != "capsnet":
        scores = scores.softmax(dim=1)
    for path, image, row in zip(args.images, images, scores):
        best = int(row.argmax())
        listed = "  ".join(f"{name} {value:.3f}" for name, value in zip(classes, row.tolist()))
        print(f"{path}: {classes[best]}  ({kind}: {listed})")
        if args.save_converted:
            folder = Path(args.save_converted)
            folder.mkdir(parents=True, exist_ok=True)
            save_grey(image, folder / f"{Path(path).stem}.28x28.png")


def run_bench(args) -> None:
    from .bench import BenchCase, default_cases, profile_step, run_benchmark, write_benchmark
    from .speed import PATHS

    paths = tuple(p.strip() for p in args.paths.split(","))
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise CapslibError(f"--paths: unknown speed path {unknown[0]!r}; choose from {', '.join(PATHS)}")
    try:
        sizes = tuple(positive_int(b) for b in args.batch_sizes.split(","))
    except argparse.ArgumentTypeError as err:
        raise CapslibError(f"--batch-sizes: {err}") from None
    table = run_benchmark(default_cases(paths, batch_sizes=sizes), steps=args.steps)
    print(f"wrote {write_benchmark(table, Path(args.out_dir), args.steps)}")
    if args.profile:
        print(profile_step("compile" if "compile" in paths else paths[-1]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .analysis import perturbation_figure_of, reconstruction_figure_of

    handlers = {
        "train": run_train, "evaluate": run_evaluate, "predict": run_predict, "bench": run_bench,
        "reconstruct": lambda a: run_figure(a, reconstruction_figure_of),
        "perturb": lambda a: run_figure(a, perturbation_figure_of),
    }
    try:
        handlers[args.command](args)
    except TrainingDiverged as err:
        print(f"capslib {args.command}: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except CapslibError as err:
        print(f"capslib {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"capslib {args.command}: interrupted; the last completed epoch's checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
