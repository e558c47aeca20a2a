"""One training step and what it reports: the step that the training loop (train.py) repeats, eager,
compiled or captured in a CUDA graph as the speed path says (speed.py), and its statistics.

A step returns its STATISTICS as one device tensor, summed over the epoch on the device, so that the
training loop never waits on the GPU inside an epoch; `named_statistics` reads the sums back by name,
once an epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SpeedPath
from .model import is_correct
from .speed import autocast, prepare_images

# What a step reports, in the order of its statistics tensor: sums of the batch means of the loss and its
# parts (0 where the model has no such part: the baseline's margin, a CapsNet without decoder's
# reconstruction), and the count of correct predictions.
STATISTICS = ("loss", "margin_loss", "reconstruction_loss", "correct")


def step_statistics(output, targets: torch.Tensor) -> torch.Tensor:
    """One batch's STATISTICS, in that order, as a float32 device tensor; absent parts 0."""
    zero = output.loss.new_zeros(())
    parts = [output.loss, output.margin_loss, output.reconstruction_loss]
    correct = is_correct(output.scores, targets).sum().to(zero.dtype)
    return torch.stack([(p if p is not None else zero).detach().float() for p in parts] + [correct])


def named_statistics(totals: torch.Tensor) -> dict[str, float]:
    """Statistics (one step's, or summed over an epoch) by name: a host sync, so once an epoch."""
    return dict(zip(STATISTICS, totals.tolist()))


class TrainStep:
    """One optimisation step, eagerly or through torch.compile."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, path: SpeedPath, device: torch.device):
        self.model, self.optimizer, self.path, self.device = model, optimizer, path, device
        # Compile a wrapper, not the module in place: evaluation and figures keep the eager model
        # and its batch sizes never trigger recompilation of the training graph.
        self.forward = torch.compile(model, dynamic=False) if path.compile else model

    def compute(self, images: torch.Tensor, targets: torch.Tensor,
                reconstruction_targets: torch.Tensor | None = None) -> torch.Tensor:
        with autocast(self.path, self.device):
            output = (self.forward(images, targets) if reconstruction_targets is None
                      else self.forward(images, targets, reconstruction_targets))
        output.loss.backward()
        self.optimizer.step()
        return step_statistics(output, targets)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 reconstruction_targets: torch.Tensor | None = None) -> torch.Tensor:
        """One step on a batch (data.Examples' three parts): its statistics tensor."""
        self.optimizer.zero_grad(set_to_none=True)
        return self.compute(images, targets, reconstruction_targets)


class GraphedTrainStep(TrainStep):
    """The whole step captured once in a CUDA graph and replayed on static input buffers.

    Capture needs a few warm-up steps (compilation, allocator, Adam's state). They would change the
    weights, so the model and optimizer state are saved before and restored after, in place: the
    run follows the same trajectory as without the graph.
    """

    WARMUP_STEPS = 3

    def __init__(self, model, optimizer, path, device, batch_size: int, image_shape=(1, 28, 28), num_targets: int = 1,
                 reconstruction_shape: tuple[int, ...] | None = None):
        super().__init__(model, optimizer, path, device)
        self.images = prepare_images(torch.rand(batch_size, *image_shape, device=device), path)
        labels = torch.arange(batch_size, device=device)
        self.targets = labels % 10 if num_targets == 1 else torch.stack([(labels + i) % 10 for i in range(num_targets)], 1)
        # zeros, not random: drawing from the CUDA generator here would move the stream that dropout reads
        self.reconstruction_targets = (None if reconstruction_shape is None
                                       else torch.zeros(batch_size, *reconstruction_shape, device=device))
        batch = (self.images, self.targets, self.reconstruction_targets)
        saved = _snapshot(model, optimizer)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_STEPS):
                super().__call__(*batch)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # Gradients are None at capture, so the captured backward writes (not adds) them each replay.
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.statistics = self.compute(*batch)
        _restore(model, optimizer, saved)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 reconstruction_targets: torch.Tensor | None = None) -> torch.Tensor:
        self.images.copy_(images)
        self.targets.copy_(targets)
        if self.reconstruction_targets is not None:
            self.reconstruction_targets.copy_(reconstruction_targets)
        self.graph.replay()
        return self.statistics


def make_train_step(model, optimizer, path: SpeedPath, device: torch.device, batch_size: int,
                    image_shape=(1, 28, 28), num_targets: int = 1,
                    reconstruction_shape: tuple[int, ...] | None = None) -> TrainStep:
    """The step of `path` for batches of `batch_size` examples of these shapes (DatasetInfo.image_shape,
    .targets, .reconstruction_shape: a captured graph holds buffers of exactly these)."""
    if path.cuda_graph:
        return GraphedTrainStep(model, optimizer, path, device, batch_size, image_shape, num_targets,
                                reconstruction_shape)
    return TrainStep(model, optimizer, path, device)


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "state": {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
                  for p in model.parameters() if p in optimizer.state},
    }


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Copy the snapshot back into the same tensors (the graph holds their addresses). Adam state
    that did not exist before the warm-up is zeroed, which is exactly a fresh Adam's state."""
    with torch.no_grad():
        for p, value in zip(model.parameters(), saved["params"]):
            p.copy_(value)
        for p, state in optimizer.state.items():
            before = saved["state"].get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value):
                    value.copy_(before[key]) if key in before else value.zero_()
