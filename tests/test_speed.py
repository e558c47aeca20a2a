"""Speed paths on the CPU: the bf16/channels_last path against the fp32 reference, path rules, and
what the CUDA-graph path relies on that runs on a CPU too (its fused Adam with a tensor lr, the
snapshot and restore around its warm-up). The compiled and graph steps themselves are checked on
the GPU in test_gpu.py."""

import pytest
import torch

from capslib.core.errors import CapslibError
from capslib.core.model import CapsNet, ModelOutput
from capslib.core.speed import (SPEED_PATHS, autocast, make_optimizer, prepare_images, prepare_model, resolve_device,
                           resolve_speed, set_lr)
from capslib.core.step import STATISTICS, TrainStep, named_statistics, step_statistics
from capslib.core.step import _restore, _snapshot  # what GraphedTrainStep does around its warm-up

CPU = torch.device("cpu")


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_bf16_channels_last_forward_matches_the_fp32_reference():
    torch.manual_seed(0)
    reference = CapsNet(routing_iterations=3, reconstruction=True).eval()
    fast = prepare_model(CapsNet(routing_iterations=3, reconstruction=True).eval(), SPEED_PATHS["bf16"])
    fast.load_state_dict(reference.state_dict())
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8)
    with torch.no_grad():
        expected = reference(images, labels)
        with autocast(SPEED_PATHS["bf16"], CPU):
            got = fast(prepare_images(images, SPEED_PATHS["bf16"]), labels)
    # bf16 operands carry ~3 significant digits: 2e-2 relative is the stated tolerance (README).
    assert relative_error(got.capsules, expected.capsules) < 2e-2
    assert relative_error(got.reconstruction, expected.reconstruction) < 2e-2
    assert got.scores.dtype == torch.float32  # routing, squash and lengths stay float32


def test_one_step_lowers_the_loss_on_its_batch():
    torch.manual_seed(0)
    model = CapsNet(routing_iterations=1, reconstruction=True)
    step = TrainStep(model, make_optimizer(model, SPEED_PATHS["fp32"], 1e-4, CPU), SPEED_PATHS["fp32"], CPU)
    images, labels = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    first = step(images, labels)
    losses = [first[0]] + [step(images, labels)[0] for _ in range(4)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_step_statistics_count_the_highest_scores_that_match():
    scores = torch.tensor([[0.1, 0.9, 0.2], [0.8, 0.1, 0.3], [0.2, 0.3, 0.7], [0.5, 0.4, 0.1]])
    output = ModelOutput(scores, torch.tensor(1.5), torch.tensor(1.0), torch.tensor(1000.0))
    stats = step_statistics(output, torch.tensor([1, 0, 0, 0]))  # argmax: 1, 0, 2, 0
    assert named_statistics(stats) == {"loss": 1.5, "margin_loss": 1.0, "reconstruction_loss": 1000.0, "correct": 3}
    assert len(stats) == len(STATISTICS)  # the names and the tensor's order are one declaration


def test_step_statistics_fill_absent_parts_with_zero():
    output = CapsNet(routing_iterations=3, reconstruction=False)(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
    stats = named_statistics(step_statistics(output, torch.tensor([0, 1])))
    assert stats["reconstruction_loss"] == 0 and stats["loss"] == stats["margin_loss"]


# ---------------------------------------------------------------------------------------------
# The graph path's warm-up: GraphedTrainStep takes a few real optimizer steps before capture and
# then restores the weights and Adam's state in place. Only the GPU test exercises the class
# itself, so its snapshot and restore are checked here on the CPU, with both optimizers make_optimizer
# builds: the eager paths' Adam and the graph path's (fused, capturable, lr a tensor).


def small_model_and_optimizer(path_name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    return model, make_optimizer(model, SPEED_PATHS[path_name], 1e-2, CPU)


def adam_steps(model, optimizer, count, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(4, 6, generator=generator)).square().sum().backward()
        optimizer.step()


@pytest.mark.parametrize("path_name", ["fp32", "graph"])
@pytest.mark.parametrize("steps_before", [0, 2], ids=["fresh", "resumed"])
def test_restore_undoes_the_warm_up_steps(path_name, steps_before):
    # steps_before=0: a new run (a fresh Adam, no state yet); 2: a resumed run (Adam has state).
    model, optimizer = small_model_and_optimizer(path_name)
    adam_steps(model, optimizer, steps_before, seed=1)
    addresses = [p.data_ptr() for p in model.parameters()]
    saved = _snapshot(model, optimizer)
    adam_steps(model, optimizer, 3, seed=2)  # the warm-up
    _restore(model, optimizer, saved)
    assert [p.data_ptr() for p in model.parameters()] == addresses  # in place: the graph holds them
    adam_steps(model, optimizer, 4, seed=3)

    reference, reference_optimizer = small_model_and_optimizer(path_name)  # the same run without warm-up
    adam_steps(reference, reference_optimizer, steps_before, seed=1)
    adam_steps(reference, reference_optimizer, 4, seed=3)
    for got, expected in zip(model.parameters(), reference.parameters()):
        assert torch.equal(got, expected)


def test_set_lr_changes_the_graph_paths_lr_tensor_in_place():
    # The captured graph reads the lr tensor it was captured with: a new tensor would be ignored.
    _, optimizer = small_model_and_optimizer("graph")
    lr = optimizer.param_groups[0]["lr"]
    set_lr(optimizer, 5e-4)
    assert optimizer.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(5e-4)
    _, optimizer = small_model_and_optimizer("fp32")
    set_lr(optimizer, 5e-4)
    assert optimizer.param_groups[0]["lr"] == 5e-4


def test_paths_resolve_per_device():
    assert resolve_speed("auto", CPU).name in ("fp32", "bf16", "compile", "compile-fp32")  # test_cpu_speed.py
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
    reference = SPEED_PATHS["fp32"]
    assert not (reference.bf16 or reference.tf32 or reference.compile or reference.cuda_graph)
    fast = SPEED_PATHS["graph"]
    assert fast.bf16 and fast.compile and fast.cuda_graph and fast.channels_last
