"""The CPU side of --speed auto: what the machine reports (native bfloat16, a C++ compiler for
inductor) and the path each combination picks; the compiled float32 path; the CPU benchmark and the
port it is measured beside (tools/port_capsnet.py)."""

import os

import pytest
import torch

from capslib.core import speed
from capslib.study.bench import load_port, run_cpu_benchmark
from capslib.core.model import CapsNet, count_parameters
from capslib.core.speed import (CPU_COMPILE_MIN_IMAGES, SPEED_PATHS, ConvWgradAsForward, CpuReport, choose_cpu_path,
                           cpu_flags, cxx_compiler, make_optimizer, native_bf16, prepare_images, prepare_model,
                           resolve_speed)
from capslib.core.step import TrainStep

CPU = torch.device("cpu")

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw {extra}
bogomips\t: 5200.00

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw {extra}
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm {extra}
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("cpuinfo, extra, expected", [
    (X86_CPUINFO, "", None),                                   # AVX-512 alone: oneDNN emulates bf16, slowly
    (X86_CPUINFO, "avx512_bf16", "AVX512_BF16"),                # Cooper Lake, Zen 4
    (X86_CPUINFO, "avx512_bf16 amx_bf16 amx_tile", "AMX-BF16"),  # Sapphire Rapids
    (ARM_CPUINFO, "", None),
    (ARM_CPUINFO, "sve bf16 i8mm", "Arm BF16"),                 # Graviton 3, Neoverse V1
])
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, extra, expected):
    assert native_bf16(cpu_flags(cpuinfo.format(extra=extra))) == expected


def test_native_bf16_without_cpuinfo_trusts_torch():
    assert cpu_flags("") == set()
    assert native_bf16(set()) is None
    assert native_bf16(set(), torch_says=True) == "AVX512_BF16"


def test_cxx_compiler_is_the_first_inductor_candidate_on_path():
    on_path = {"g++": "/usr/bin/g++", "clang++": "/opt/llvm/bin/clang++"}
    found = dict(which=on_path.get, python_headers=True)
    assert cxx_compiler(("clang++", "g++"), **found) == "/opt/llvm/bin/clang++"
    assert cxx_compiler((None, "g++"), **found) == "/usr/bin/g++"  # None: inductor's conda g++, off by default
    assert cxx_compiler(("icpx",), **found) is None
    assert cxx_compiler(("g++",), which=on_path.get, python_headers=False) is None  # no Python.h to build against


@pytest.mark.parametrize("bf16, compiler, images, expected", [
    ("AMX-BF16", "/usr/bin/g++", None, "compile"),
    ("AVX512_BF16", "/usr/bin/g++", CPU_COMPILE_MIN_IMAGES, "compile"),
    ("AVX512_BF16", "/usr/bin/g++", CPU_COMPILE_MIN_IMAGES - 1, "bf16"),  # too short to repay compiling
    ("AVX512_BF16", None, None, "bf16"),
    (None, "/usr/bin/g++", None, "compile-fp32"),
    (None, "/usr/bin/g++", 2000, "fp32"),
    (None, None, None, "fp32"),
])
def test_the_cpu_path_rule(bf16, compiler, images, expected):
    assert choose_cpu_path(CpuReport("AVX512", bf16, compiler), images) == expected


def test_auto_on_a_cpu_follows_its_report(monkeypatch):
    monkeypatch.setattr(speed, "cpu_report", lambda: CpuReport("AVX2", None, None))
    assert resolve_speed("auto", CPU).name == "fp32"
    monkeypatch.setattr(speed, "cpu_report", lambda: CpuReport("AVX512", "AMX-BF16", "/usr/bin/g++"))
    assert resolve_speed("auto", CPU).name == "compile"
    assert resolve_speed("auto", CPU, images=64).name == "bf16"
    assert resolve_speed("fp32", CPU, images=10**9).name == "fp32"  # an explicit path is kept


def test_the_compiled_float32_path_is_strict_float32():
    path = SPEED_PATHS["compile-fp32"]
    assert path.compile and not (path.bf16 or path.tf32 or path.channels_last or path.cuda_graph)


def test_the_port_has_the_papers_parameter_count_and_trains():
    port = load_port()
    assert port is not None
    torch.manual_seed(0)
    step = port.PortTrainStep()
    assert count_parameters(step.model) == count_parameters(CapsNet(routing_iterations=3, reconstruction=True)) == 8_215_568
    lengths, reconstruction = step.model(torch.rand(4, 1, 28, 28))
    assert lengths.shape == (4, 10) and reconstruction.shape == (4, 1, 28, 28)
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8)
    losses = [step(images, labels).item() for _ in range(3)]
    assert losses[-1] < losses[0]


def test_cpu_benchmark_rows():
    table = run_cpu_benchmark(paths=("fp32",), batch_size=8, steps=1, rounds=2, warmup=1, log=lambda *a: None)
    assert table.path.tolist() == ["port", "fp32"]
    assert (table.images_per_second > 0).all() and table.speedup_vs_port.iloc[0] == 1.0
    assert table.speedup_vs_fp32.iloc[1] == 1.0


def conv_gradients(conv, x, bf16):
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach().float(), x.grad.float(), conv.weight.grad, conv.bias.grad


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_weight_gradient_as_a_forward_convolution(bf16):
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(16, 8, kernel_size=9, stride=2)
    fast = prepare_model(torch.nn.Sequential(torch.nn.Conv2d(16, 8, kernel_size=9, stride=2)), SPEED_PATHS["bf16"])[0]
    assert type(fast) is ConvWgradAsForward  # swapped in on the CPU bf16 paths
    fast.load_state_dict(reference.state_dict())
    x = torch.rand(4, 16, 20, 20)
    expected = conv_gradients(reference, x, bf16=False)
    got = conv_gradients(fast, x, bf16)
    tolerance = 2e-2 if bf16 else 1e-5
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype == torch.float32
        assert ((a - b).norm() / b.norm()).item() < tolerance


def test_only_strided_convolutions_are_swapped():
    model = prepare_model(CapsNet(routing_iterations=3, reconstruction=True), SPEED_PATHS["bf16"])
    assert type(model.primary_caps) is ConvWgradAsForward and type(model.conv1) is torch.nn.Conv2d
    assert set(model.state_dict()) == set(CapsNet(routing_iterations=3, reconstruction=True).state_dict())
    assert type(prepare_model(CapsNet(routing_iterations=3, reconstruction=True), SPEED_PATHS["fp32"]).primary_caps) is torch.nn.Conv2d


# Compiling on a 2-core CPU takes 1-2 minutes per path without inductor's cache: opt-in, like the GPU tests.
@pytest.mark.skipif(not os.environ.get("CAPSLIB_COMPILE_TESTS"), reason="set CAPSLIB_COMPILE_TESTS=1 (minutes)")
@pytest.mark.skipif(speed.cpu_report().compiler is None, reason="torch.compile on a CPU needs a C++ compiler")
@pytest.mark.parametrize("compiled, eager", [("compile", "bf16"), ("compile-fp32", "fp32")])
def test_compiled_cpu_steps_follow_the_eager_ones(compiled, eager):
    """The compiled CPU paths (inductor C++; bf16 with the weight gradient as a forward convolution)
    train like their eager twins: the same losses over a few steps, the same weights after."""
    images, labels = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    results = []
    for name in (eager, compiled):
        torch.manual_seed(0)
        model = prepare_model(CapsNet(routing_iterations=2, reconstruction=True), SPEED_PATHS[name])
        step = TrainStep(model, make_optimizer(model, SPEED_PATHS[name], 1e-3, CPU), SPEED_PATHS[name], CPU)
        losses = torch.stack([step(prepare_images(images, SPEED_PATHS[name]), labels)[0] for _ in range(3)])
        results.append((losses, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (loss_a, params_a), (loss_b, params_b) = results
    tolerance = 1e-2 if SPEED_PATHS[compiled].bf16 else 1e-5
    assert torch.allclose(loss_a, loss_b, rtol=tolerance), (loss_a, loss_b)
    assert ((params_a - params_b).norm() / params_a.norm()).item() < tolerance
