"""Profile CPU training steps of capslib's CapsNet (routing 3 + reconstruction, batch 128) with torch.profiler.

    PYTHONPATH=. python3 tools/cpu_profile.py fp32 bf16 compile [--steps 5] [--threads 2]

Prints, per path, the top operators by self CPU time (with input shapes, so conv1 and the
primary-capsule convolution are told apart) and a coarse attribution into the step's parts.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from capslib.core.data import load_dataset, to_tensors
from capslib.core.model import CapsNet
from capslib.core.speed import SPEED_PATHS, configure_backends, make_optimizer, prepare_images, prepare_model
from capslib.core.step import make_train_step

CPU = torch.device("cpu")


def category(name: str, shapes: str) -> str:
    """A coarse part of the step for one profiler row (eager op names or inductor kernel names)."""
    n = name.lower()
    if "optimizer" in n or "adam" in n or "_foreach" in n or "lerp" in n or "addcdiv" in n or "addcmul" in n:
        return "Adam"
    if "conv" in n:
        if "[128, 1, 28, 28]" in shapes or "[256, 1, 9, 9]" in shapes:
            return "conv1"
        # the third shape is the weight gradient computed as a forward convolution (speed.ConvWgradAsForward):
        # the batch as channels, the output gradient as the kernel
        primary = ("256, 256, 9, 9" in shapes or "[128, 256, 20, 20]" in shapes or "[256, 128, 19, 19]" in shapes)
        return "primary conv (9x9 s2)" if primary else "conv (?)"
    if n in ("aten::mm", "aten::addmm", "aten::linear") or "mkl_linear" in n:
        return "decoder (linear)"
    if "bmm" in n or "einsum" in n or "matmul" in n:
        return "u_hat einsum (W·u)"
    if n.startswith("cpp_fused") or n.startswith("graph_") or "compiled" in n or "inductor" in n:
        return "inductor fused kernels"
    return "other elementwise/reductions"


def profile_path(name: str, images, labels, steps: int, warmup: int, rows: int) -> None:
    path = SPEED_PATHS[name]
    configure_backends(path)
    torch.manual_seed(0)
    model = prepare_model(CapsNet(routing_iterations=3, reconstruction=True), path)
    optimizer = make_optimizer(model, path, 1e-3, CPU)
    step = make_train_step(model, optimizer, path, CPU, 128)
    x, y = prepare_images(images[:128], path), labels[:128]
    tic = time.perf_counter()
    for _ in range(warmup):
        step(x, y)
    print(f"\n===== {name}: warm-up {warmup} steps {time.perf_counter() - tic:.1f} s")
    tic = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    wall = (time.perf_counter() - tic) / steps
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step(x, y)
    print(f"unprofiled step {wall * 1000:.0f} ms ({128 / wall:.0f} img/s)")
    averages = prof.key_averages(group_by_input_shape=True)
    parts = defaultdict(float)
    top = []
    for e in averages:
        self_ms = e.self_cpu_time_total / 1000 / steps
        if self_ms <= 0:
            continue
        shapes = str(e.input_shapes)
        parts[category(e.key, shapes)] += self_ms
        top.append((self_ms, e.key, shapes[:90], e.count // steps))
    total = sum(parts.values())
    print(f"profiled self CPU total {total:.0f} ms/step")
    for ms, key, shapes, count in sorted(top, reverse=True)[:rows]:
        print(f"  {ms:8.1f} ms {100 * ms / total:5.1f}%  x{count:<3d} {key[:60]:60s} {shapes}")
    print("  --- by part")
    for part, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {ms:8.1f} ms {100 * ms / total:5.1f}%  {part}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from capslib.core.provenance import provenance
    from capslib.study.bench import cpu_description
    info = provenance(CPU)
    print(f"Device: {cpu_description()}; {info['software']}; commit {info['commit']}; {info['date']}.")
    print(f"Command: `{info['command']}`; {args.steps} profiled steps of batch 128 (routing 3 + reconstruction), "
          "after warm-up; self CPU time per step.")
    data = load_dataset("mnist", train_subset=512, test_subset=1)
    images, labels = to_tensors(data.train_images, data.train_labels)
    for name in args.paths:
        profile_path(name, images, labels, args.steps, args.warmup, args.rows)


if __name__ == "__main__":
    main()
