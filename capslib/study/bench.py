"""`capslib bench`: training and evaluation throughput of each speed path, measured in one process.

Steps are timed with CUDA events after warm-up (compilation and graph capture excluded, reported
separately as setup time), on real MNIST batches already on the device. Each configuration's
speed-up is over the fp32 eager reference measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..core.data import load_dataset, to_tensors
from ..core.errors import CapslibError
from ..core.evaluate import evaluate
from ..core.model import build_model
from ..core.provenance import provenance
from ..core.files import atomic_write_text
from .tables import markdown_table
from ..core.speed import SPEED_PATHS, configure_backends, make_optimizer, make_train_step, prepare_images, prepare_model


@dataclass
class BenchCase:
    path: str
    routing: int | None  # None for the baseline CNN
    reconstruction: bool
    batch_size: int = 128
    model: str = "capsnet"


def default_cases(paths=tuple(SPEED_PATHS), batch_sizes=(128,)) -> list[BenchCase]:
    """Every path for routing 3 + reconstruction (the headline), the fp32 reference and the fastest
    path for the other configurations, and larger batches for the fastest path."""
    fastest = paths[-1]
    cases = [BenchCase(p, 3, True) for p in paths]
    for routing in (1, 3):
        for recon in (True, False):
            if (routing, recon) != (3, True):
                cases += [BenchCase(p, routing, recon) for p in dict.fromkeys(("fp32", fastest)) if p in paths]
    cases += [BenchCase(fastest, 3, True, b) for b in batch_sizes if b != 128]
    cases += [BenchCase(p, None, False, model="baseline") for p in dict.fromkeys(("fp32", fastest)) if p in paths]
    return cases


def _model_and_step(case: BenchCase, device: torch.device):
    path = SPEED_PATHS[case.path]
    configure_backends(path)
    torch.manual_seed(0)
    model = prepare_model(build_model(case.model, case.routing or 1, case.reconstruction).to(device), path)
    optimizer = make_optimizer(model, path, 1e-3, device)
    return model, make_train_step(model, optimizer, path, device, case.batch_size)


def bench_training(case: BenchCase, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int) -> dict:
    device = images.device
    tic = time.perf_counter()
    model, step = _model_and_step(case, device)
    batches = [(prepare_images(images[i:i + case.batch_size], SPEED_PATHS[case.path]), labels[i:i + case.batch_size])
               for i in range(0, len(images) - case.batch_size + 1, case.batch_size)]
    for i in range(warmup):
        step(*batches[i % len(batches)])
    torch.cuda.synchronize(device)
    setup = time.perf_counter() - tic
    torch.cuda.reset_peak_memory_stats(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    totals = torch.zeros(4, device=device)
    start.record()
    for i in range(steps):
        totals += step(*batches[i % len(batches)])
    end.record()
    torch.cuda.synchronize(device)
    ms = start.elapsed_time(end) / steps
    eval_seconds = _time_evaluation(model, images[:10000], labels[:10000], case.path)
    return {"model": case.model, "path": case.path, "routing": case.routing, "reconstruction": case.reconstruction,
            "batch_size": case.batch_size, "images_per_second": round(case.batch_size / ms * 1000),
            "ms_per_step": round(ms, 3), "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "setup_seconds": round(setup, 1), "eval_10k_seconds": round(eval_seconds, 4),
            "final_loss": round(totals[0].item() / steps, 4)}


def _time_evaluation(model, images, labels, path_name: str, repeats: int = 3) -> float:
    evaluate(model, images, labels, 2000, SPEED_PATHS[path_name])  # warm-up
    torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeats):
        evaluate(model, images, labels, 2000, SPEED_PATHS[path_name])
    return (time.perf_counter() - tic) / repeats


def run_benchmark(cases: list[BenchCase], steps: int = 100, warmup: int = 10, log=print) -> pd.DataFrame:
    if not torch.cuda.is_available():
        raise CapslibError("needs a CUDA GPU (it times the CUDA speed paths); this machine has none visible")
    device = torch.device("cuda")
    data = load_dataset("mnist", train_subset=20480, test_subset=10000)
    images, labels = to_tensors(data.train_images, data.train_labels, device)
    rows = []
    for case in cases:
        try:
            row = bench_training(case, images, labels, steps, warmup)
        except Exception as err:  # report a broken path and go on measuring the others
            row = {**case.__dict__, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        rows.append(row)
        log(" ".join(f"{k}={v}" for k, v in row.items()))
        torch.cuda.empty_cache()
    return add_speedups(pd.DataFrame(rows))


def add_speedups(table: pd.DataFrame) -> pd.DataFrame:
    """Each row's images/s over the fp32 reference of the same configuration at batch 128."""
    def key(r):  # the baseline has no routing (None, or NaN once in a table: NaN never equals NaN)
        return r.get("model", "capsnet"), r["routing"] if pd.notna(r["routing"]) else None, r["reconstruction"]

    reference = {key(r): r["images_per_second"] for r in table[table.path == "fp32"].to_dict("records")}
    table["speedup_vs_fp32"] = [
        round(r["images_per_second"] / reference[key(r)], 2)
        if pd.notna(r.get("images_per_second")) and pd.notna(reference.get(key(r))) else None
        for r in table.to_dict("records")]
    return table


def write_benchmark(table: pd.DataFrame, out_dir: Path, steps: int) -> Path:
    info = provenance("cuda")
    header = (f"Device: {info['device']}; {info['software']}; lock {info['lock']}; commit {info['commit']}; "
              f"{info['date']}.\n"
              f"Command: `{info['command']}`. Training steps of real MNIST batches, {steps} timed after "
              f"warm-up, CUDA events; setup = model build + compilation + capture + warm-up.\n"
              "Precision: fp32 = strict float32 (TF32 off); tf32 = TF32 convolutions/matmuls; bf16, compile, "
              "graph = bfloat16 autocast with routing, squash and losses in float32.\n\n")
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "benchmarks.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "benchmarks.md", "# Benchmarks\n\n" + header + markdown_table(table) + "\n")
    return out_dir / "benchmarks.md"


def profile_step(path_name: str = "graph", routing: int = 3, reconstruction: bool = True, batch_size: int = 128,
                 steps: int = 20, row_limit: int = 25) -> str:
    """torch.profiler's top CUDA kernels of the training step (for the 'graph' path the profiler sees
    the kernels of the replayed graph only as one launch, so profile 'compile' to see inside)."""
    from torch.profiler import ProfilerActivity, profile
    device = torch.device("cuda")
    data = load_dataset("mnist", train_subset=batch_size * 4, test_subset=1)
    images, labels = to_tensors(data.train_images, data.train_labels, device)
    case = BenchCase(path_name, routing, reconstruction, batch_size)
    _, step = _model_and_step(case, device)
    x, y = prepare_images(images[:batch_size], SPEED_PATHS[path_name]), labels[:batch_size]
    for _ in range(5):
        step(x, y)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(x, y)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=row_limit)
