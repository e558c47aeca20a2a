"""Speed paths on the CPU: the bf16/channels_last path against the fp32 reference, and path rules.
(The compiled and CUDA-graph paths are checked on the GPU in test_gpu.py.)"""

import pytest
import torch

from capslib.errors import CapslibError
from capslib.model import CapsNet
from capslib.speed import (PATHS, TrainStep, autocast, make_optimizer, prepare_images, prepare_model,
                           resolve_device, resolve_speed, step_statistics)

CPU = torch.device("cpu")


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_bf16_channels_last_forward_matches_the_fp32_reference():
    torch.manual_seed(0)
    reference = CapsNet().eval()
    fast = prepare_model(CapsNet().eval(), PATHS["bf16"])
    fast.load_state_dict(reference.state_dict())
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8)
    with torch.no_grad():
        expected = reference(images, labels)
        with autocast(PATHS["bf16"], CPU):
            got = fast(prepare_images(images, PATHS["bf16"]), labels)
    # bf16 operands carry ~3 significant digits: 2e-2 relative is the stated tolerance (README).
    assert relative_error(got.capsules, expected.capsules) < 2e-2
    assert relative_error(got.reconstruction, expected.reconstruction) < 2e-2
    assert got.scores.dtype == torch.float32  # routing, squash and lengths stay float32


def test_one_step_lowers_the_loss_on_its_batch():
    torch.manual_seed(0)
    model = CapsNet(routing_iterations=1)
    step = TrainStep(model, make_optimizer(model, PATHS["fp32"], 1e-4, CPU), PATHS["fp32"], CPU)
    images, labels = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    first = step(images, labels)
    losses = [first[0]] + [step(images, labels)[0] for _ in range(4)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert first.shape == (4,) and 0 <= first[3] <= 16  # loss, margin, reconstruction, correct


def test_step_statistics_fill_absent_parts_with_zero():
    output = CapsNet(reconstruction=False)(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
    stats = step_statistics(output, torch.tensor([0, 1]))
    assert stats[2] == 0 and stats[0] == stats[1]


def test_paths_resolve_per_device():
    assert resolve_speed("auto", CPU).name == "fp32"
    assert resolve_speed("bf16", CPU).bf16
    with pytest.raises(CapslibError, match="needs a CUDA device"):
        resolve_speed("graph", CPU)
    with pytest.raises(CapslibError, match="unknown path"):
        resolve_speed("warp", CPU)
    assert resolve_device("cpu") == CPU
    with pytest.raises(CapslibError, match="unknown device"):
        resolve_device("tpu:9")
    if not torch.cuda.is_available():
        with pytest.raises(CapslibError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_the_reference_path_is_strict_float32():
    reference = PATHS["fp32"]
    assert not (reference.bf16 or reference.tf32 or reference.compile or reference.cuda_graph)
    fast = PATHS["graph"]
    assert fast.bf16 and fast.compile and fast.cuda_graph and fast.channels_last
