"""Speed paths: the same training step, run in more or less clever ways.

Every path computes the paper's step (forward, margin + reconstruction loss, backward, Adam); they
differ in precision and in how the work reaches the GPU:

    fp32     eager, strict float32 (TF32 off): the reference
    tf32     eager, TF32 tensor cores for float32 convolutions and matmuls
    bf16     eager, bfloat16 autocast, channels_last; routing, squash and losses stay float32
    compile  bf16 + torch.compile of the model (forward and backward)
    compile-fp32  torch.compile of the model in strict float32: the compiled path for a CPU without
             native bfloat16 arithmetic
    graph    compile + the whole step (forward, backward, fused Adam) captured in one CUDA graph
             and replayed: one launch per step instead of hundreds. The CUDA default.

`--speed auto` picks, on CUDA, `graph`; on a CPU, from what the machine reports (`cpu_report`,
`choose_cpu_path`): bfloat16 only where the CPU computes it natively (AVX512_BF16 or AMX on x86, the
BF16 extension on Arm), torch.compile only where a C++ compiler for inductor is present and the run
is long enough to repay the compilation, eager float32 otherwise.

The step itself, eager, compiled or captured in a CUDA graph as a path says, is in capslib/core/step.py.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import SPEED_PATHS, SpeedPath  # each path declared as plain data
from .errors import CapslibError



def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise CapslibError(f"--device: unknown device {device!r} (use auto, cpu or cuda)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CapslibError(f"--device {device}: this machine has no CUDA GPU")
    return resolved


# torch.compile's warm-up on a CPU (inductor writing and building C++) takes 10-50 s per process: a
# run that trains fewer images than this is faster eager. On a 2-core AVX512_BF16 CPU compiling saves
# ~5 ms an image at batch 128 over eager bf16 (bench --device cpu), so it repays ~50 s after ~10,000
# images; twice that leaves a margin for slower compiles and smaller batches.
CPU_COMPILE_MIN_IMAGES = 20_000
BF16_FLAGS = {"avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16"}  # /proc/cpuinfo names


@dataclass(frozen=True)
class CpuReport:
    """What a CPU reports that the CPU path rule needs."""
    capability: str               # torch's vector ISA for its own kernels: AVX2, AVX512, SVE256, ...
    bf16: str | None              # the native bfloat16 arithmetic found (AVX512_BF16, AMX-BF16, Arm BF16), or None
    compiler: str | None          # the C++ compiler inductor would use (its full path), or None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of /proc/cpuinfo (x86 "flags", Arm "Features"); empty where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def native_bf16(flags: set[str], torch_says: bool = False) -> str | None:
    """The native bfloat16 arithmetic this CPU has, by name, or None. oneDNN runs bf16 on any AVX-512
    CPU, but without these instructions it converts to float32 and back: slower than float32 itself.
    `torch_says`: torch's own cpuinfo check (torch.cpu._is_avx512_bf16_supported or _is_amx_tile_supported),
    for a system without /proc/cpuinfo."""
    for flag in ("amx_bf16", "avx512_bf16", "bf16"):
        if flag in flags:
            return BF16_FLAGS[flag]
    return "AVX512_BF16" if torch_says else None


def cxx_compiler(candidates=None, which=shutil.which, python_headers: bool | None = None) -> str | None:
    """The C++ compiler torch.compile's CPU backend would find: inductor's config.cpp.cxx (the CXX
    environment variable, else g++), searched on PATH. None: inductor cannot build its kernels here,
    also where Python's headers are missing (its kernels are built against Python.h)."""
    if python_headers is None:
        python_headers = Path(sysconfig.get_paths()["include"], "Python.h").is_file()
    if not python_headers:
        return None
    if candidates is None:
        from torch._inductor import config as inductor_config  # imported only when asked: it is slow
        candidates = inductor_config.cpp.cxx
        candidates = candidates if isinstance(candidates, (list, tuple)) else (candidates,)
    for name in candidates:
        if name and (found := which(name)):
            return found
    return None


@functools.lru_cache(maxsize=1)
def cpu_report() -> CpuReport:
    torch_says = False
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        try:
            torch_says |= bool(getattr(torch.cpu, check)())
        except (AttributeError, RuntimeError):
            pass
    return CpuReport(torch.backends.cpu.get_cpu_capability(), native_bf16(cpu_flags(), torch_says), cxx_compiler())


def choose_cpu_path(report: CpuReport, images: int | None = None) -> str:
    """The CPU path for --speed auto: bfloat16 where the CPU does it natively, compiled where a C++
    compiler is present and the run trains at least CPU_COMPILE_MIN_IMAGES images (None: a long run).

        native bf16   compiler, long run   ->  compile        (bf16 + channels_last + torch.compile)
        native bf16   otherwise            ->  bf16           (eager bf16 + channels_last)
        no bf16       compiler, long run   ->  compile-fp32   (torch.compile in float32)
        no bf16       otherwise            ->  fp32           (the eager reference)
    """
    compiled = report.compiler is not None and (images is None or images >= CPU_COMPILE_MIN_IMAGES)
    if report.bf16:
        return "compile" if compiled else "bf16"
    return "compile-fp32" if compiled else "fp32"


def resolve_speed(speed: str, device: torch.device, images: int | None = None) -> SpeedPath:
    """The speed path for --speed; `images`: how many the run will train (epochs × training images),
    which decides whether compiling pays on a CPU."""
    if speed == "auto":
        return SPEED_PATHS["graph" if device.type == "cuda" else choose_cpu_path(cpu_report(), images)]
    if speed not in SPEED_PATHS:
        raise CapslibError(f"--speed: unknown path {speed!r}; choose auto or one of {', '.join(SPEED_PATHS)}")
    if SPEED_PATHS[speed].cuda_only and device.type != "cuda":
        raise CapslibError(f"--speed {speed} needs a CUDA device, not {device}")
    return SPEED_PATHS[speed]


def configure_backends(path: SpeedPath) -> None:
    """TF32 for float32 matmuls and convolutions (cuDNN allows it by default: the reference path
    switches it off explicitly), and cuDNN's algorithm search."""
    torch.backends.cuda.matmul.allow_tf32 = path.tf32
    torch.backends.cudnn.allow_tf32 = path.tf32
    torch.backends.cudnn.benchmark = path.cudnn_benchmark


def autocast(path: SpeedPath, device: torch.device):
    if not path.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def prepare_model(model: nn.Module, path: SpeedPath) -> nn.Module:
    if path.channels_last:
        model.to(memory_format=torch.channels_last)
    if path.bf16 and all(p.device.type == "cpu" for p in model.parameters()):
        for module in model.modules():
            if type(module) is nn.Conv2d and ConvWgradAsForward.applies(module):
                module.__class__ = ConvWgradAsForward  # the same parameters and state_dict keys
    return model

class _WeightGradAsForward(torch.autograd.Function):
    """conv2d(x, weight, bias, stride) (no padding, groups or dilation) whose weight gradient is
    computed as a forward convolution: dW[o,c,i,j] = Σ_{b,p,q} g[b,o,p,q] · x[b,c,s·p+i,s·q+j] is the
    convolution of x with the batch as its channels (C×B×H×W) by g (O×B×P×Q) dilated by the stride s.

    The same sums as the direct weight gradient, in another order. Why: on a CPU, oneDNN 3.x runs the
    bf16 weight gradient of the primary-capsule convolution (9×9, stride 2, 256→256) with an older
    kernel (jit_bf16) at a fraction of the speed of its forward kernels (brgemm), which run the same
    arithmetic as this convolution (tools/cpu_profile.py, ONEDNN_VERBOSE=1)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.bias_dtype = stride, None if bias is None else bias.dtype
        return F.conv2d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        s = ctx.stride
        grad = grad.to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight.to(x.dtype), None, (s, s), (0, 0), (1, 1), False, (0, 0), 1, (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            rows, cols = s * (grad.shape[2] - 1) + weight.shape[2], s * (grad.shape[3] - 1) + weight.shape[3]
            grad_w = F.conv2d(x[:, :, :rows, :cols].transpose(0, 1), grad.transpose(0, 1), dilation=s)
            grad_w = grad_w.transpose(0, 1).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None


class ConvWgradAsForward(nn.Conv2d):
    """An nn.Conv2d trained through _WeightGradAsForward (prepare_model swaps the class of a strided
    convolution in on the CPU bf16 paths; its parameters, and so checkpoints, are unchanged)."""

    @staticmethod
    def applies(conv: nn.Conv2d) -> bool:
        return (conv.stride[0] == conv.stride[1] > 1 and conv.padding == (0, 0) and conv.dilation == (1, 1)
                and conv.groups == 1 and conv.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _WeightGradAsForward.apply(x, self.weight, self.bias, self.stride[0])


def prepare_images(images: torch.Tensor, path: SpeedPath) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if path.channels_last else images


def make_optimizer(model: nn.Module, path: SpeedPath, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam; fused on CUDA. A captured graph needs the learning rate as a device tensor (changed in
    place each epoch) and capturable state."""
    if path.cuda_graph:
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=device), fused=True, capturable=True)
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
