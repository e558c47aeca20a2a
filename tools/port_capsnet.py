"""The XifengGuo/CapsNet-Pytorch port's CapsNet, reimplemented for SPEED COMPARISON ONLY.

Not part of the study: capslib never trains or scores this model. It is the popular PyTorch port
(github.com/XifengGuo/CapsNet-Pytorch, capsulelayers.py + capsulenet.py) written down as that code
does it, so `capslib bench --device cpu` can time it beside capslib's paths in one process:

  * PrimaryCapsule: a 9×9 stride-2 convolution (256 → 256 channels), then `view(B, -1, 8)` of the
    NCHW output (the port groups 8 consecutive values of one channel's map into a capsule) and squash
  * DenseCapsule: weight [10, 1152, 16, 8] (0.01·randn), x_hat = squeeze(matmul(weight,
    x[:, None, :, :, None]), -1) → [B, 10, 1152, 16]; routing with logits b [B, 10, 1152] and
    softmax over the 10 digit capsules, x_hat detached in all but the last iteration
  * squash: norm² / (1 + norm²) / (norm + 1e-8) · x
  * the decoder 160-512-1024-784 (ReLU, ReLU, sigmoid) fed the capsules masked by the one-hot label
  * caps_loss: margin loss (0.9 / 0.1 / 0.5, summed over classes, batch mean) + lam_recon · MSE,
    lam_recon = 0.0005 · 784 = 0.392; Adam (lr 0.001)

The timed step is the body of the port's `train` loop on tensors already in memory (its DataLoader
and augmentation are left out, as capslib's own batches are pre-loaded too):
    optimizer.zero_grad(); y_pred, x_recon = model(x, y); loss = caps_loss(...); loss.backward();
    optimizer.step()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def squash(inputs: torch.Tensor, axis: int = -1) -> torch.Tensor:
    norm = torch.norm(inputs, p=2, dim=axis, keepdim=True)
    scale = norm ** 2 / (1 + norm ** 2) / (norm + 1e-8)
    return scale * inputs


class DenseCapsule(nn.Module):
    def __init__(self, in_num_caps: int, in_dim_caps: int, out_num_caps: int, out_dim_caps: int, routings: int = 3):
        super().__init__()
        self.in_num_caps, self.in_dim_caps = in_num_caps, in_dim_caps
        self.out_num_caps, self.out_dim_caps = out_num_caps, out_dim_caps
        self.routings = routings
        self.weight = nn.Parameter(0.01 * torch.randn(out_num_caps, in_num_caps, out_dim_caps, in_dim_caps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [out, in, 16, 8] x [B, 1, in, 8, 1] -> [B, out, in, 16, 1] -> [B, out, in, 16]
        x_hat = torch.squeeze(torch.matmul(self.weight, x[:, None, :, :, None]), dim=-1)
        x_hat_detached = x_hat.detach()
        b = torch.zeros(x.size(0), self.out_num_caps, self.in_num_caps, device=x.device)
        assert self.routings > 0, "The 'routings' should be > 0."
        for i in range(self.routings):
            c = F.softmax(b, dim=1)
            if i == self.routings - 1:
                outputs = squash(torch.sum(c[:, :, :, None] * x_hat, dim=-2, keepdim=True))
            else:  # x_hat_detached updates b: no gradients flow on this path
                outputs = squash(torch.sum(c[:, :, :, None] * x_hat_detached, dim=-2, keepdim=True))
                b = b + torch.sum(outputs * x_hat_detached, dim=-1)
        return torch.squeeze(outputs, dim=-2)


class PrimaryCapsule(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dim_caps: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        super().__init__()
        self.dim_caps = dim_caps
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.conv2d(x)
        outputs = outputs.view(x.size(0), -1, self.dim_caps)
        return squash(outputs)


class CapsuleNet(nn.Module):
    def __init__(self, input_size=(1, 28, 28), classes: int = 10, routings: int = 3):
        super().__init__()
        self.input_size, self.classes, self.routings = input_size, classes, routings
        self.conv1 = nn.Conv2d(input_size[0], 256, kernel_size=9, stride=1, padding=0)
        self.primarycaps = PrimaryCapsule(256, 256, 8, kernel_size=9, stride=2, padding=0)
        self.digitcaps = DenseCapsule(in_num_caps=32 * 6 * 6, in_dim_caps=8, out_num_caps=classes, out_dim_caps=16,
                                      routings=routings)
        self.decoder = nn.Sequential(
            nn.Linear(16 * classes, 512), nn.ReLU(inplace=True),
            nn.Linear(512, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, input_size[0] * input_size[1] * input_size[2]), nn.Sigmoid(),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        x = self.relu(self.conv1(x))
        x = self.primarycaps(x)
        x = self.digitcaps(x)
        length = x.norm(dim=-1)
        if y is None:  # testing: one-hot of the longest capsule
            index = length.max(dim=1)[1]
            y = torch.zeros(length.size(), device=x.device).scatter_(1, index.view(-1, 1), 1.0)
        reconstruction = self.decoder((x * y[:, :, None]).view(x.size(0), -1))
        return length, reconstruction.view(-1, *self.input_size)


def caps_loss(y_true, y_pred, x, x_recon, lam_recon: float):
    L = y_true * torch.clamp(0.9 - y_pred, min=0.0) ** 2 + 0.5 * (1 - y_true) * torch.clamp(y_pred - 0.1, min=0.0) ** 2
    L_margin = L.sum(dim=1).mean()
    L_recon = nn.MSELoss()(x_recon, x)
    return L_margin + lam_recon * L_recon


LAM_RECON = 0.0005 * 784  # the port's default --lam_recon 0.392


class PortTrainStep:
    """One step of the port's training loop (labels as class indices, one-hot encoded as it does)."""

    def __init__(self, routings: int = 3, lr: float = 0.001):
        self.model = CapsuleNet(routings=routings)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = torch.zeros(labels.size(0), 10).scatter_(1, labels.view(-1, 1), 1.0)
        self.optimizer.zero_grad()
        y_pred, x_recon = self.model(x, y)
        loss = caps_loss(y, y_pred, x, x_recon, LAM_RECON)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


if __name__ == "__main__":  # a smoke test: a few steps on random images
    import time
    torch.manual_seed(0)
    step = PortTrainStep()
    x, labels = torch.rand(128, 1, 28, 28), torch.arange(128) % 10
    for _ in range(3):
        tic = time.perf_counter()
        loss = step(x, labels)
        print(f"loss {loss.item():.4f}  {128 / (time.perf_counter() - tic):.1f} img/s")
