"""Speed paths: the same training step, run in more or less clever ways.

Every path computes the paper's step (forward, margin + reconstruction loss, backward, Adam); they
differ in precision and in how the work reaches the GPU:

    fp32     eager, strict float32 (TF32 off): the reference, and the CPU default
    tf32     eager, TF32 tensor cores for float32 convolutions and matmuls
    bf16     eager, bfloat16 autocast, channels_last; routing, squash and losses stay float32
    compile  bf16 + torch.compile of the model (forward and backward)
    graph    compile + the whole step (forward, backward, fused Adam) captured in one CUDA graph
             and replayed: one launch per step instead of hundreds. The CUDA default.

A step returns its statistics (loss, margin loss, reconstruction loss, correct predictions) as a
device tensor, so the training loop never waits on the GPU inside an epoch.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .config import SPEED_PATHS, SpeedPath  # each path declared as plain data
from .errors import CapslibError
from .model import is_correct



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


def resolve_speed(speed: str, device: torch.device) -> SpeedPath:
    if speed == "auto":
        return SPEED_PATHS["graph" if device.type == "cuda" else "fp32"]
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
    return model


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


def step_statistics(output, targets: torch.Tensor) -> torch.Tensor:
    """[loss, margin loss, reconstruction loss, correct predictions] of one batch; absent parts 0."""
    zero = output.loss.new_zeros(())
    parts = [output.loss, output.margin_loss, output.reconstruction_loss]
    correct = is_correct(output.scores, targets).sum().to(zero.dtype)
    return torch.stack([(p if p is not None else zero).detach().float() for p in parts] + [correct])


class TrainStep:
    """One optimisation step, eagerly or through torch.compile."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, path: SpeedPath, device: torch.device):
        self.model, self.optimizer, self.path, self.device = model, optimizer, path, device
        # Compile a wrapper, not the module in place: evaluation and figures keep the eager model
        # and its batch sizes never trigger recompilation of the training graph.
        self.forward = torch.compile(model, dynamic=False) if path.compile else model

    def compute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast(self.path, self.device):
            output = self.forward(images, targets)
        output.loss.backward()
        self.optimizer.step()
        return step_statistics(output, targets)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self.compute(images, targets)


class GraphedTrainStep(TrainStep):
    """The whole step captured once in a CUDA graph and replayed on static input buffers.

    Capture needs a few warm-up steps (compilation, allocator, Adam's state). They would change the
    weights, so the model and optimizer state are saved before and restored after, in place: the
    run follows the same trajectory as without the graph.
    """

    WARMUP_STEPS = 3

    def __init__(self, model, optimizer, path, device, batch_size: int, image_shape=(1, 28, 28), num_targets: int = 1):
        super().__init__(model, optimizer, path, device)
        self.images = prepare_images(torch.rand(batch_size, *image_shape, device=device), path)
        labels = torch.arange(batch_size, device=device)
        self.targets = labels % 10 if num_targets == 1 else torch.stack([(labels + i) % 10 for i in range(num_targets)], 1)
        saved = _snapshot(model, optimizer)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_STEPS):
                super().__call__(self.images, self.targets)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # Gradients are None at capture, so the captured backward writes (not adds) them each replay.
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.statistics = self.compute(self.images, self.targets)
        _restore(model, optimizer, saved)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.images.copy_(images)
        self.targets.copy_(targets)
        self.graph.replay()
        return self.statistics


def make_train_step(model, optimizer, path: SpeedPath, device: torch.device, batch_size: int,
                    image_shape=(1, 28, 28), num_targets: int = 1) -> TrainStep:
    if path.cuda_graph:
        return GraphedTrainStep(model, optimizer, path, device, batch_size, image_shape, num_targets)
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
