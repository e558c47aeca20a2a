"""The fast paths against the fp32 reference, on a CUDA GPU (skipped elsewhere).

Run on the GPU machine with `python -m pytest -m cuda tests/test_gpu.py`.
"""

import pytest
import torch

from capslib.core.config import TrainConfig
from capslib.core.data import load_dataset, to_tensors
from capslib.core.model import CapsNet
from capslib.core.speed import SPEED_PATHS, autocast, make_optimizer, prepare_images, prepare_model, configure_backends
from capslib.core.step import GraphedTrainStep, TrainStep
from capslib.core.train import train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def mnist():
    data = load_dataset("mnist", train_subset=4096, test_subset=1000)
    return to_tensors(data.train_images, data.train_labels, CUDA)


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


OFFICIAL_MODEL = dict(digit_bias=True, primary_capsules="slim", init="official", margin_weight=0.05)


def fresh_model(path_name, seed=0, routing=3, **options):
    torch.manual_seed(seed)
    return prepare_model(CapsNet(routing_iterations=routing, reconstruction=True, **options).to(CUDA), SPEED_PATHS[path_name])


def forward(model, images, labels, path_name):
    path = SPEED_PATHS[path_name]
    configure_backends(path)
    with torch.no_grad(), autocast(path, CUDA):
        return model(prepare_images(images, path), labels)


@pytest.mark.parametrize("path_name", ["tf32", "bf16", "compile"])
def test_fast_forward_matches_fp32_reference(mnist, path_name):
    images, labels = mnist[0][:256], mnist[1][:256]
    reference = forward(fresh_model("fp32"), images, labels, "fp32")
    model = fresh_model(path_name)
    if SPEED_PATHS[path_name].compile:
        model = torch.compile(model, dynamic=False)
    fast = forward(model, images, labels, path_name)
    tolerance = 3e-3 if path_name == "tf32" else 2e-2  # TF32 ~1e-3, bf16 operands ~1e-2 (stated in README)
    assert relative_error(fast.capsules, reference.capsules) < tolerance
    assert relative_error(fast.reconstruction, reference.reconstruction) < tolerance
    assert abs(fast.loss.item() - reference.loss.item()) / reference.loss.item() < tolerance


def test_graph_capture_leaves_weights_and_optimizer_untouched(mnist):
    model = fresh_model("graph")
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, SPEED_PATHS["graph"], 1e-3, CUDA)
    GraphedTrainStep(model, optimizer, SPEED_PATHS["graph"], CUDA, 128)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    for state in optimizer.state.values():
        assert all(not torch.is_tensor(v) or not v.any() for v in state.values())


@pytest.mark.parametrize("options", [{}, OFFICIAL_MODEL], ids=["paper", "official"])
def test_graph_step_follows_the_compiled_step(mnist, options):
    images, labels = mnist
    batches = [(prepare_images(images[i:i + 128], SPEED_PATHS["graph"]), labels[i:i + 128]) for i in range(0, 1280, 128)]
    trajectories = []
    for step_type, path_name in ((TrainStep, "compile"), (GraphedTrainStep, "graph")):
        model = fresh_model(path_name, **options)
        optimizer = make_optimizer(model, SPEED_PATHS[path_name], 1e-3, CUDA)
        kwargs = {"batch_size": 128} if step_type is GraphedTrainStep else {}
        step = step_type(model, optimizer, SPEED_PATHS[path_name], CUDA, **kwargs)
        losses = torch.stack([step(x, y)[0].clone() for x, y in batches]).cpu()
        trajectories.append((losses, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (loss_a, params_a), (loss_b, params_b) = trajectories
    assert torch.allclose(loss_a, loss_b, rtol=1e-2), (loss_a, loss_b)
    assert relative_error(params_b, params_a) < 1e-3


def test_graph_path_trains_and_resumes(tmp_path):
    common = dict(train_subset=4096, test_subset=1000, batch_size=128, device="cuda:0", speed="graph")
    whole = train(TrainConfig(epochs=3, ckpt_dir=str(tmp_path / "whole"), **common), log=lambda *_: None)
    train(TrainConfig(epochs=2, ckpt_dir=str(tmp_path / "split"), **common), log=lambda *_: None)
    split = train(TrainConfig(epochs=3, ckpt_dir=str(tmp_path / "split"), **common), resume=True, log=lambda *_: None)
    assert whole.history.test_accuracy.iloc[-1] > 0.9
    # GPU kernels are not bitwise deterministic (atomic adds), so allow a little drift.
    assert abs(whole.history.test_accuracy.iloc[-1] - split.history.test_accuracy.iloc[-1]) < 0.01
    assert list(split.history.epoch) == [1, 2, 3]


def test_official_recipe_trains_on_the_graph_path(tmp_path):
    """Every official choice at once (per-step lr on the captured graph, all-shifts stream,
    validation split): it learns, and the lr that reaches Adam follows the smooth schedule."""
    config = TrainConfig.from_recipe("official", train_subset=6000, test_subset=1000, validation_size=1000,
                                     epochs=3, eval_every=2, device="cuda:0", speed="graph",
                                     ckpt_dir=str(tmp_path / "official"))
    run = train(config, log=lambda *_: None)
    assert list(run.history.epoch) == [2, 3]
    assert run.history.validation_accuracy.iloc[-1] > 0.9 and run.history.test_accuracy.iloc[-1] > 0.9
    saved = torch.load(tmp_path / "official" / "last.pt", weights_only=True)
    steps = 3 * (5000 // 128)
    assert float(saved["optimizer"]["param_groups"][0]["lr"]) == pytest.approx(1e-3 * 0.96 ** ((steps - 1) / 2000), rel=1e-5)
