"""`capslib bench`: training and evaluation throughput of each speed path, measured in one process.

Steps are timed with CUDA events after warm-up (compilation and graph capture excluded, reported
separately as setup time), on real MNIST batches already on the device. Each configuration's
speed-up is over the fp32 eager reference measured in the same run.

`capslib bench --device cpu` times the CPU paths instead (`run_cpu_benchmark`): training steps with
time.perf_counter, every path built and warmed up first, then timed in interleaved rounds (A B C A B
C ...) so that a change of load on a shared machine falls on all of them; each path's best round is
reported, beside the popular XifengGuo PyTorch port (tools/port_capsnet.py) measured in the same
rounds, and the load average before and after.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..core.data import load_dataset, to_tensors
from ..core.errors import CapslibError
from ..core.evaluate import evaluate
from ..core.model import build_model
from ..core.provenance import REPO, provenance
from ..core.files import atomic_write_text
from .tables import markdown_table
from ..core.speed import SPEED_PATHS, configure_backends, cpu_report, make_optimizer, prepare_images, prepare_model
from ..core.step import make_train_step


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
    model = build_model(case.model, routing_iterations=case.routing or 1, reconstruction=case.reconstruction)
    model = prepare_model(model.to(device), path)
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
        raise CapslibError("needs a CUDA GPU (it times the CUDA speed paths); this machine has none visible "
                           "(--device cpu times the CPU paths)")
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
    return _write(table, Path(out_dir) / "benchmarks", "Benchmarks", header)


def _write(table: pd.DataFrame, stem: Path, title: str, header: str) -> Path:
    """<stem>.csv and <stem>.md (the title, the header saying how it was measured, the table)."""
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    atomic_write_text(stem.with_suffix(".md"), f"# {title}\n\n" + header + markdown_table(table) + "\n")
    return stem.with_suffix(".md")


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


# ---------------------------------------------------------------------------------------------
# CPU: perf_counter, interleaved rounds, the port beside

CPU = torch.device("cpu")
CPU_PATHS = ("fp32", "bf16", "compile")
PORT_FILE = REPO / "tools" / "port_capsnet.py"


def load_port():
    """The XifengGuo port's reimplementation (tools/port_capsnet.py, a bench helper outside capslib),
    or None where this checkout has no tools/ folder (an installed wheel)."""
    if not PORT_FILE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("port_capsnet", PORT_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_description() -> str:
    model = "CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    report = cpu_report()
    return (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.get_num_threads()} threads, vector ISA "
            f"{report.capability}, native bf16: {report.bf16 or 'none'}, C++ compiler: {report.compiler or 'none'}")


def _cpu_step(name: str, routing: int, reconstruction: bool, batch_size: int):
    """A training-step callable (images, labels) for a speed path or 'port'."""
    torch.manual_seed(0)
    if name == "port":
        port = load_port()
        if port is None:
            raise CapslibError(f"the port's bench helper {PORT_FILE} is missing")
        return port.PortTrainStep(routings=routing)
    path = SPEED_PATHS[name]
    configure_backends(path)
    model = prepare_model(build_model("capsnet", routing_iterations=routing, reconstruction=reconstruction), path)
    step = make_train_step(model, make_optimizer(model, path, 1e-3, CPU), path, CPU, batch_size)
    return lambda images, labels: step(prepare_images(images, path), labels)


def run_cpu_benchmark(paths=CPU_PATHS, routing: int = 3, reconstruction: bool = True, batch_size: int = 128,
                      steps: int = 5, rounds: int = 3, warmup: int = 2, port: bool = True, log=print) -> pd.DataFrame:
    """Training images/s of each CPU path (and the port: routing with reconstruction only, as it has
    no other), best of `rounds` interleaved rounds of `steps` steps each."""
    data = load_dataset("mnist", train_subset=batch_size * 4, test_subset=1)
    images, labels = to_tensors(data.train_images, data.train_labels)
    batches = [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    names = (["port"] if port and reconstruction else []) + list(paths)
    runners, rows = {}, {}
    for name in names:
        row = rows[name] = {"model": "capsnet" if name != "port" else "XifengGuo port", "path": name,
                            "routing": routing, "reconstruction": reconstruction, "batch_size": batch_size}
        try:
            tic = time.perf_counter()
            runners[name] = _cpu_step(name, routing, reconstruction, batch_size)
            for i in range(warmup):
                runners[name](*batches[i % len(batches)])
            row["setup_seconds"] = round(time.perf_counter() - tic, 1)
        except Exception as err:  # report a broken path and go on measuring the others
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            log(" ".join(f"{k}={v}" for k, v in row.items()))
    load_before = os.getloadavg()[0]
    times = {name: [] for name in runners}
    for r in range(rounds):
        for name, run in runners.items():
            tic = time.perf_counter()
            for i in range(steps):
                run(*batches[i % len(batches)])
            times[name].append((time.perf_counter() - tic) / steps)
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {batch_size / t[-1]:.0f}" for n, t in times.items())
            + " img/s")
    load_after = os.getloadavg()[0]
    for name, seconds in times.items():
        best = min(seconds)
        rows[name].update(images_per_second=round(batch_size / best, 1), ms_per_step=round(best * 1000, 1),
                          median_images_per_second=round(batch_size / sorted(seconds)[len(seconds) // 2], 1),
                          load_before=round(load_before, 2), load_after=round(load_after, 2))
    table = pd.DataFrame(list(rows.values()))
    for reference in ("fp32", "port"):
        if reference in times:
            base = table.loc[table.path == reference, "images_per_second"].item()
            table[f"speedup_vs_{reference}"] = (table.images_per_second / base).round(2)
    return table


def write_cpu_benchmark(table: pd.DataFrame, out_dir: Path, steps: int, rounds: int) -> Path:
    info = provenance(CPU)
    header = (f"Device: {cpu_description()}; {info['software']}; lock {info['lock']}; commit {info['commit']}; "
              f"{info['date']}.\n"
              f"Command: `{info['command']}`. Training steps of real MNIST batches, timed with time.perf_counter "
              f"in {rounds} interleaved rounds of {steps} steps (every path, then again); the best round of "
              "each, and its median. Load average (1 min) before and after the rounds: a shared machine's "
              "timings vary with it. setup = model build + compilation + 2 warm-up steps.\n"
              "The port: XifengGuo/CapsNet-Pytorch as reimplemented in tools/port_capsnet.py (its model, "
              "loss and Adam; its data loader left out), for comparison only.\n\n")
    return _write(table, Path(out_dir) / "benchmarks-cpu", "CPU benchmarks", header)
