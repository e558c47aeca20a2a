"""Experiments for the CPU speed path: variants of capslib's training step, timed in one process with
interleaved rounds (A B C A B C ...), best of the rounds.

    PYTHONPATH=. python3 tools/cpu_variants.py port fp32 bf16 compile ... [--rounds 3 --steps 4]

Variants (every one computes the paper's step: same model, loss and Adam; they differ in precision,
layout and how the work is scheduled):
    port            the XifengGuo port (tools/port_capsnet.py), eager fp32
    fp32 bf16 compile   capslib's paths as they are
    <base>+bmm      routing as batched matrix products over û laid out [B, 10, 1152, 16]
    <base>+u32      û and routing in float32 (bf16 paths: the W·u product is not autocast)
    <base>+fused    Adam(fused=True) (one kernel over all parameters, CPU)
    <base>+foreach  Adam(foreach=True)
    <base>+nocl     no channels_last
    <base>+cadam    the optimizer step compiled too
    compile-mat     compile with mode max-autotune-no-cudagraphs
    compile32       torch.compile in float32 (no bf16): for CPUs without native bf16
    <base>+t1       torch.set_num_threads(1) for that variant
    <base>+nowg     bf16 paths: the primary-capsule weight gradient by oneDNN's backward kernel (before
                    speed.ConvWgradAsForward)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from port_capsnet import PortTrainStep  # noqa: E402

from capslib.core.data import load_dataset, to_tensors  # noqa: E402
from capslib.core.model import CapsNet, dynamic_routing, squash  # noqa: E402
from capslib.core.speed import SPEED_PATHS, ConvWgradAsForward, SpeedPath, prepare_images, prepare_model  # noqa: E402
from capslib.core.step import TrainStep  # noqa: E402

CPU = torch.device("cpu")


def routing_bmm(u_hat_t: torch.Tensor, iterations: int) -> torch.Tensor:
    """Procedure 1 on û laid out B×out×in×D: s_j = c_j·û_j and b_ij += û_j|i·v_j as batched
    matrix-vector products (no B×in×out×D temporaries). Couplings and logits float32."""
    B, J, I, D = u_hat_t.shape
    logits = u_hat_t.new_zeros((B, J, I), dtype=torch.float32)
    for iteration in range(iterations):
        coupling = logits.softmax(dim=1).to(u_hat_t.dtype)
        s = torch.matmul(coupling.unsqueeze(2), u_hat_t).squeeze(2)           # B×J×D
        v = squash(s.float())
        if iteration < iterations - 1:
            logits = logits + torch.matmul(u_hat_t, v.to(u_hat_t.dtype).unsqueeze(-1)).squeeze(-1).float()
    return v


class VariantCapsNet(CapsNet):
    def __init__(self, bmm: bool = False, u32: bool = False, **kw):
        super().__init__(**{"routing_iterations": 3, "reconstruction": True, **kw})
        self.bmm, self.u32 = bmm, u32

    def _uhat(self, u, layout):
        if self.u32:
            with torch.autocast("cpu", enabled=False):
                return torch.einsum(layout, u.float(), self.W)
        return torch.einsum(layout, u, self.W)

    def digit_capsules(self, images):
        u = self.primary_capsules(images)
        if self.bmm:
            return routing_bmm(self._uhat(u, "bik,ijdk->bjid"), self.routing_iterations)
        return dynamic_routing(self._uhat(u, "bik,ijdk->bijd"), self.routing_iterations)


def build_variant(spec: str):
    parts = spec.split("+")
    base, opts = parts[0], set(parts[1:])
    if base == "port":
        torch.manual_seed(0)
        return PortTrainStep()
    mode = None
    if base == "compile-mat":
        base, mode = "compile", "max-autotune-no-cudagraphs"
    p = SpeedPath("compile32", compile=True) if base == "compile32" else SPEED_PATHS[base]
    path = SpeedPath(spec, bf16=p.bf16, channels_last=p.channels_last and "nocl" not in opts, compile=p.compile)
    torch.manual_seed(0)
    model = VariantCapsNet(bmm="bmm" in opts, u32="u32" in opts)
    model = prepare_model(model, path)
    if "nowg" in opts:  # the bf16 paths' weight gradient through oneDNN's own kernel again
        for module in model.modules():
            if type(module) is ConvWgradAsForward:
                module.__class__ = torch.nn.Conv2d
    kw = {"fused": True} if "fused" in opts else {"foreach": True} if "foreach" in opts else {}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)
    step = TrainStep(model, optimizer, path, CPU)
    if mode is not None:
        step.forward = torch.compile(model, dynamic=False, mode=mode)
    if "cadam" in opts:
        optimizer.step = torch.compile(optimizer.step)
    threads = 1 if "t1" in opts else None

    def run(x, y):
        return step(prepare_images(x, path), y)
    run.threads = threads
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    data = load_dataset("mnist", train_subset=args.batch * 8, test_subset=1)
    images, labels = to_tensors(data.train_images, data.train_labels)
    batches = [(images[i:i + args.batch], labels[i:i + args.batch]) for i in range(0, len(images), args.batch)]
    steps, setup = {}, {}
    for spec in args.variants:
        tic = time.perf_counter()
        steps[spec] = build_variant(spec)
        if getattr(steps[spec], "threads", None):
            torch.set_num_threads(steps[spec].threads)
        for i in range(args.warmup):
            steps[spec](*batches[i % len(batches)])
        torch.set_num_threads(2)
        setup[spec] = time.perf_counter() - tic
        print(f"{spec}: setup + {args.warmup} warm-up steps {setup[spec]:.1f} s", flush=True)
    best = {spec: float("inf") for spec in steps}
    single = {spec: [] for spec in steps}
    print(f"load before: {os.getloadavg()}")
    for r in range(args.rounds):
        for spec, step in steps.items():
            torch.set_num_threads(getattr(step, "threads", None) or 2)
            tic = time.perf_counter()
            for i in range(args.steps):
                t0 = time.perf_counter()
                step(*batches[i % len(batches)])
                single[spec].append(time.perf_counter() - t0)
            dt = (time.perf_counter() - tic) / args.steps
            best[spec] = min(best[spec], dt)
            print(f"  round {r} {spec}: {args.batch / dt:.1f} img/s (load {os.getloadavg()[0]:.2f})", flush=True)
        torch.set_num_threads(2)
    print(f"load after: {os.getloadavg()}")
    ref, ref_step = best.get("port"), min(single["port"]) if "port" in single else None
    print(f"{'variant':28s} {'img/s':>8s} {'ms/step':>8s} {'x port':>7s}   {'best step img/s':>15s} {'x port':>7s}"
          f" {'median step':>11s}")
    for spec, dt in best.items():
        ratio = f"{ref / dt:7.2f}" if ref else ""
        fastest = min(single[spec])
        ratio_step = f"{ref_step / fastest:7.2f}" if ref_step else ""
        median = sorted(single[spec])[len(single[spec]) // 2]
        print(f"{spec:28s} {args.batch / dt:8.1f} {dt * 1000:8.0f} {ratio}   {args.batch / fastest:15.1f} {ratio_step}"
              f" {args.batch / median:11.1f}")


if __name__ == "__main__":
    main()
