"""Agreement of the CPU fast paths with the fp32 eager reference.

    PYTHONPATH=. python3 tools/cpu_agreement.py forward [--paths bf16,compile,compile-fp32]
    PYTHONPATH=. python3 tools/cpu_agreement.py train [--paths fp32,compile] [--seeds 1] [--epochs 2 --train 10000]

forward: the same weights (a random CapsNet with W × 30, so capsules are as long as early in training,
and optionally a trained checkpoint via --ckpt) scored on 1,000 MNIST test images by each path and by
fp32 eager: relative error (‖fast − ref‖ / ‖ref‖) of capsule lengths, capsules, reconstructions, the
loss, and the share of equal predictions.

train: short runs through capslib.core.train (the same data order, augmentation and initial weights on
every path for a seed), test accuracy on all 10,000 test images, wall time of each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from capslib.core.config import TrainConfig
from capslib.core.data import load_dataset, to_tensors
from capslib.core.model import CapsNet
from capslib.core.provenance import provenance
from capslib.core.speed import SPEED_PATHS, autocast, configure_backends, prepare_images, prepare_model
from capslib.core.train import train

CPU = torch.device("cpu")


def relative_error(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run_forward(model, images, labels, path_name):
    path = SPEED_PATHS[path_name]
    configure_backends(path)
    model = prepare_model(model, path)
    if path.compile:
        model = torch.compile(model, dynamic=False)
    outputs = []
    with torch.no_grad(), autocast(path, CPU):
        for i in range(0, len(images), 250):
            outputs.append(model(prepare_images(images[i:i + 250], path), labels[i:i + 250]))
    return {"scores": torch.cat([o.scores for o in outputs]), "capsules": torch.cat([o.capsules for o in outputs]),
            "reconstruction": torch.cat([o.reconstruction for o in outputs]),
            "loss": torch.stack([o.loss for o in outputs]).mean()}


PROVENANCE = ("command", "commit", "device", "software", "date")


def emit(row: dict, out: str | None) -> None:
    """Print one result row as JSON, and append it to `out` (JSON lines) when given."""
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


def forward_agreement(paths, state=None, label="random W×30", out=None) -> list[dict]:
    data = load_dataset("mnist", train_subset=1, test_subset=1000)
    images, labels = to_tensors(data.test_images, data.test_labels)
    torch.manual_seed(0)
    reference_model = CapsNet(routing_iterations=3, reconstruction=True).eval()
    if state is not None:
        reference_model.load_state_dict(state)
    else:
        with torch.no_grad():
            reference_model.W.mul_(30)
    state = {k: v.clone() for k, v in reference_model.state_dict().items()}
    reference = run_forward(reference_model, images, labels, "fp32")
    rows = []
    for name in paths:
        model = CapsNet(routing_iterations=3, reconstruction=True).eval()
        model.load_state_dict(state)
        tic = time.perf_counter()
        fast = run_forward(model, images, labels, name)
        rows.append({"weights": label, "path": name,
                     "lengths_rel_err": relative_error(fast["scores"], reference["scores"]),
                     "lengths_max_abs_err": (fast["scores"].float() - reference["scores"]).abs().max().item(),
                     "capsules_rel_err": relative_error(fast["capsules"], reference["capsules"]),
                     "reconstruction_rel_err": relative_error(fast["reconstruction"], reference["reconstruction"]),
                     "loss_rel_err": abs(fast["loss"].item() - reference["loss"].item()) / reference["loss"].item(),
                     "same_predictions": (fast["scores"].argmax(1) == reference["scores"].argmax(1)).float().mean().item(),
                     "mean_length": reference["scores"].mean().item(), "seconds": round(time.perf_counter() - tic, 1),
                     **{key: value for key, value in provenance("cpu").items() if key in PROVENANCE}})
        emit(rows[-1], out)
    return rows


def train_agreement(paths, seeds, epochs, train_images, out) -> list[dict]:
    rows = []
    for seed in seeds:
        for name in paths:
            folder = tempfile.mkdtemp(prefix=f"agree-{name}-{seed}-")
            config = TrainConfig(epochs=epochs, train_subset=train_images, test_subset=None, batch_size=128, seed=seed,
                                 device="cpu", speed=name, ckpt_dir=folder, eval_every=epochs)
            load = os.getloadavg()[0]
            tic = time.perf_counter()
            run = train(config, log=lambda *_: None)
            last = run.history.iloc[-1]
            session = run.info["sessions"][-1]  # where, when and from which commit it ran
            rows.append({"path": name, "seed": seed, "epochs": epochs, "train_images": train_images,
                         "test_accuracy": float(last.test_accuracy), "test_loss": float(last.test_loss),
                         "train_loss": float(last.train_loss), "wall_seconds": round(time.perf_counter() - tic, 1),
                         "train_images_per_second": [float(r) for r in run.history.train_images_per_second],
                         "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                         "ckpt": folder, **{key: session[key] for key in PROVENANCE}})
            emit(rows[-1], out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("forward", "train"))
    parser.add_argument("--paths")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--ckpt", help="forward: also compare on these trained weights (a capslib checkpoint)")
    parser.add_argument("--out", help="also append each row to this file (JSON lines)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.what == "forward":
        paths = (args.paths or "bf16,compile,compile-fp32").split(",")
        forward_agreement(paths, out=args.out)
        if args.ckpt:
            state = torch.load(args.ckpt, weights_only=False, map_location="cpu")["model"]
            forward_agreement(paths, state, label=f"trained ({args.ckpt})", out=args.out)
    else:
        train_agreement((args.paths or "fp32,compile").split(","), [int(s) for s in args.seeds.split(",")],
                        args.epochs, args.train, args.out)


if __name__ == "__main__":
    main()
