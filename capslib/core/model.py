"""The paper in one file: Sabour, Frosst, Hinton, "Dynamic Routing Between Capsules" (2017), read top
to bottom, importing nothing but torch.

    squash (Eq. 1) → predictions û (Eq. 2) → dynamic routing (Procedure 1, Eq. 3) → margin loss (Eq. 4)
    → reconstruction decoder (Fig. 2) → CapsNet (Fig. 1) → the baseline CNNs (sections 5, 5.2, 6)

Notation follows the paper: u_i are the primary capsules (8D; 1,152 on MNIST's 28×28, 3,200 on
MultiMNIST's 36×36), û_{j|i} = W_ij u_i their predictions for the 10 digit capsules v_j (16D), b_ij the
routing logits and c_ij = softmax_j(b_ij) the coupling coefficients. Where the paper is silent we
follow the authors' official TensorFlow code (Sarasra/models, research/capsules) and say so;
docs/differences.md lists every such choice. The choices a run makes (routing iterations, the decoder,
the official code's variants) are arguments here; their defaults live in capslib/core/config.py. So is the
routing procedure itself: CapsNet takes the function (`dynamic_routing` by default), and other procedures,
registered by name in capslib/core/routing.py, are handed to it the same way.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# The architecture (section 4): conv1 256@9×9; PrimaryCaps 32 types of 8D capsules, 9×9 stride 2;
# DigitCaps 10 capsules of 16D, one per class.
IMAGE_SIZE = 28
CONV1_CHANNELS, KERNEL = 256, 9
PRIMARY_TYPES, PRIMARY_DIM = 32, 8
NUM_CLASSES, DIGIT_DIM = 10, 16
# The loss (section 3, Eq. 4; section 4.1): margins, the down-weighting of absent classes, and the
# scale of the reconstruction loss beside it.
M_POS, M_NEG, LAMBDA = 0.9, 0.1, 0.5
RECONSTRUCTION_WEIGHT = 0.0005
# The official code averages the per-class margin cost 0.5·pos + 0.5·λ·neg over the batch and the 10
# classes (layers.py _margin_loss, evaluate): 0.5/10 = 1/20 of the paper's sum over classes.
OFFICIAL_MARGIN_WEIGHT = 0.05


def primary_grid(image_size: int) -> int:
    """The PrimaryCaps grid side: conv1 9×9 (valid), then 9×9 stride 2 (valid). 28 → 6 (1,152 capsules),
    36 → 10 (MultiMNIST: 3,200), 40 → 12 (expanded MNIST: 4,608)."""
    return (image_size - 2 * (KERNEL - 1) - 1) // 2 + 1


NUM_PRIMARY = PRIMARY_TYPES * primary_grid(IMAGE_SIZE) ** 2  # 1,152


class ModelOutput(NamedTuple):
    scores: torch.Tensor                        # B×10: capsule lengths (CapsNet) or logits (CNN)
    loss: torch.Tensor | None = None            # the training objective, when targets are given
    margin_loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None  # mean sum of squared errors, unweighted
    capsules: torch.Tensor | None = None        # B×10×16 digit capsules v_j
    reconstruction: torch.Tensor | None = None  # B×pixels decoder output (B×k×pixels with k targets per image)


# ---------------------------------------------------------------------------------------------
# Eq. 1: the squashing non-linearity


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """v = ‖s‖² / (1 + ‖s‖²) · s / ‖s‖: short vectors shrink to almost zero length, long ones to just
    below 1. The epsilon keeps v = 0 and its gradient finite at s = 0 (the official code has none and
    yields NaN there)."""
    squared_norm = (s * s).sum(dim, keepdim=True)
    return s * (squared_norm / ((1 + squared_norm) * torch.sqrt(squared_norm + eps)))


# ---------------------------------------------------------------------------------------------
# Eq. 2 and Procedure 1: predictions and routing by agreement


def prediction_vectors(u: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Eq. 2: û_{j|i} = W_ij u_i, for B×in×8 capsules u and in×out×16×8 matrices W → B×in×out×16."""
    return torch.einsum("bik,ijdk->bijd", u, W)


def dynamic_routing(u_hat: torch.Tensor, iterations: int, detach_early: bool = False,
                    bias: torch.Tensor | None = None, return_couplings: bool = False
                    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Procedure 1: route predictions û (B×in×out×D) to the parent capsules v (B×out×D).

        for r iterations:
            c_i = softmax(b_i)                  over the parents j      (Eq. 3)
            s_j = Σ_i c_ij û_{j|i}
            v_j = squash(s_j)                                           (Eq. 1)
            b_ij ← b_ij + û_{j|i} · v_j         the agreement

    The logits start at zero. Gradients flow through every iteration, as in the official code;
    `detach_early=True` stops them in all but the last iteration, as the popular XifengGuo port does.
    `bias` (out×D), the official code's, is added to every s_j before the squash; the paper has none.

    The logits, couplings and capsules are float32; products with a bfloat16 û promote to float32.
    Written as broadcast products and sums rather than einsum: torch.compile fuses each into one pass
    over û (read once, in its storage precision), where einsum becomes memory-bound batched
    matrix-vector products (measured: the largest cost of the compiled step, docs/speed.md).

    With `return_couplings`, also return the coupling coefficients c_ij that each iteration used,
    stacked as iterations×B×in×out (the first iteration's are uniform, 1/out).
    """
    u_hat_early = u_hat.detach() if detach_early else u_hat
    logits = u_hat.new_zeros(u_hat.shape[:3], dtype=torch.float32)
    couplings = []
    for iteration in range(iterations):
        last = iteration == iterations - 1
        votes = u_hat if last else u_hat_early
        coupling = logits.softmax(dim=2)
        if return_couplings:
            couplings.append(coupling)
        s = (coupling.unsqueeze(-1) * votes).sum(dim=1)                  # s_j = Σ_i c_ij û_j|i
        v = squash(s if bias is None else s + bias)
        if not last:
            logits = logits + (votes * v.unsqueeze(1)).sum(dim=-1)       # b_ij += û_j|i · v_j
    return (v, torch.stack(couplings)) if return_couplings else v


# ---------------------------------------------------------------------------------------------
# Eq. 4 and section 4.1: the losses, in float32


def margin_loss(lengths: torch.Tensor, targets: torch.Tensor,
                m_pos: float = M_POS, m_neg: float = M_NEG, lam: float = LAMBDA) -> torch.Tensor:
    """Eq. 4, summed over the classes and averaged over the batch:

        L_k = T_k max(0, m⁺ − ‖v_k‖)² + λ (1 − T_k) max(0, ‖v_k‖ − m⁻)²

    `targets` holds one class per example (B) or several (B×k, MultiMNIST): T_k = 1 for every class
    present. No extra factor of 0.5 (the official code has one; the paper does not)."""
    lengths = lengths.float()
    present = F.one_hot(targets, lengths.shape[1]).to(lengths.dtype)
    if targets.dim() == 2:
        present = present.amax(dim=1)
    per_class = (present * F.relu(m_pos - lengths) ** 2
                 + lam * (1 - present) * F.relu(lengths - m_neg) ** 2)
    return per_class.sum(dim=1).mean()


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Section 4.1: the sum of squared pixel errors per image, averaged over the batch (the objective
    weighs it by RECONSTRUCTION_WEIGHT). With k reconstructions per example (B×k×pixels against
    B×k×C×H×W digits), the sum of their k SSEs."""
    error = reconstruction.float().flatten(1) - images.float().flatten(1)
    return (error * error).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------
# Fig. 2: the reconstruction decoder


class Decoder(nn.Module):
    """Three fully connected layers 512-1024-784 (ReLU, ReLU, sigmoid) reconstruct the image from the
    16D capsule of one class; the other classes' capsules are masked to zero. (MultiMNIST:
    512-1024-1296, a 36×36 image.)"""

    def __init__(self, num_classes: int = NUM_CLASSES, capsule_dim: int = DIGIT_DIM, pixels: int = IMAGE_SIZE ** 2):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(num_classes * capsule_dim, 512), nn.ReLU(inplace=True),
            nn.Linear(512, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, pixels), nn.Sigmoid(),
        )

    def forward(self, capsules: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        mask = F.one_hot(classes, capsules.shape[1]).to(capsules.dtype)
        return self.layers((capsules * mask.unsqueeze(-1)).flatten(1))


# ---------------------------------------------------------------------------------------------
# Predictions


def predicted_classes(scores: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The prediction: the longest capsule (k = 1, a B vector), or the k longest (B×k; MultiMNIST: the
    paper's "two most active digit capsules")."""
    return scores.argmax(dim=1) if k == 1 else scores.topk(k, dim=1).indices


def is_correct(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per example: the argmax is the label (B targets) or, with B×k targets, the k highest scores are
    exactly the k labels, in any order (the official evaluator, layers.py `evaluate`: correct iff
    set_difference(top_k(labels), top_k(logits)) is empty)."""
    if targets.dim() == 1:
        return scores.argmax(dim=1) == targets
    predicted = predicted_classes(scores, targets.shape[1])
    return (predicted.sort(dim=1).values == targets.sort(dim=1).values).all(dim=1)


# ---------------------------------------------------------------------------------------------
# Fig. 1: CapsNet


PRIMARY_CAPSULE_KINDS = ("conv", "slim")
INITS = ("default", "official")


class CapsNet(nn.Module):
    """Conv1 (256@9×9, ReLU) → PrimaryCaps (32×8D, 9×9 stride 2, squash) → DigitCaps (10×16D,
    dynamic routing) → optional reconstruction decoder. 8,215,568 parameters with the decoder,
    6,804,224 without; no bias in DigitCaps (the paper's equations have none).

    Table 1 varies `routing_iterations` (1 or 3) and `reconstruction`, so they have no default here.
    The other arguments default to the paper's model: `routing` is the procedure that routes û to the
    digit capsules (Procedure 1; another with its signature, capslib/core/routing.py); `in_channels` the
    channels of an input image (1 for every MNIST-like set). The official code's variants
    (capslib/core/config.py COMPONENTS gives their sources):
      digit_bias=True          a learned [10, 16] bias in DigitCaps, initialised to 0.1 (+160 parameters)
      primary_capsules="slim"  conv_slim_capsule: the convolution has no bias of its own; its output is
                               routed from one input capsule to the 32 types with one iteration of zero
                               logits, i.e. multiplied by softmax = 1/32, and a [32, 8] bias is added
                               (−256 + 256 parameters)
      init="official"          truncated normals (±2σ) with σ 0.05 (conv1) and 0.1 (PrimaryCaps, W, the
                               decoder), every bias 0.1; the default is PyTorch's for the layers and
                               N(0, 0.01²) for W
      margin_weight=0.05       the official loss (OFFICIAL_MARGIN_WEIGHT) beside the same 0.0005·SSE
    Larger inputs (section 6: MultiMNIST, 36×36; section 5.2: expanded MNIST, 40×40) give a larger
    PrimaryCaps grid, hence more primary capsules and W_ij, and a larger decoder output.
    """

    def __init__(self, *, routing_iterations: int, reconstruction: bool, routing=dynamic_routing,
                 detach_routing: bool = False, digit_bias: bool = False, primary_capsules: str = "conv",
                 init: str = "default", margin_weight: float = 1.0, image_size: int = IMAGE_SIZE,
                 in_channels: int = 1, num_targets: int = 1):
        super().__init__()
        if routing_iterations < 1:
            raise ValueError(f"routing_iterations must be at least 1, got {routing_iterations}")
        if primary_capsules not in PRIMARY_CAPSULE_KINDS or init not in INITS:
            raise ValueError(f"unknown primary_capsules {primary_capsules!r} or init {init!r}")
        self.routing_iterations = routing_iterations
        self.routing = routing  # a function, not a module: no parameters, so checkpoints never name it
        self.detach_routing = detach_routing
        self.margin_weight = margin_weight
        self.num_primary = PRIMARY_TYPES * primary_grid(image_size) ** 2
        self.num_targets = num_targets  # digits per image: the prediction is the num_targets longest capsules
        self.conv1 = nn.Conv2d(in_channels, CONV1_CHANNELS, kernel_size=KERNEL)
        slim = primary_capsules == "slim"
        self.primary_caps = nn.Conv2d(CONV1_CHANNELS, PRIMARY_TYPES * PRIMARY_DIM, kernel_size=KERNEL, stride=2,
                                      bias=not slim)
        self.primary_bias = nn.Parameter(torch.full((PRIMARY_TYPES * PRIMARY_DIM,), 0.1)) if slim else None
        self.primary_scale = 1 / PRIMARY_TYPES if slim else 1.0  # the zero-logit softmax over 32 types
        # One 8×16 matrix W_ij for each (primary capsule i, digit capsule j) pair, stored as 16×8.
        self.W = nn.Parameter(0.01 * torch.randn(self.num_primary, NUM_CLASSES, DIGIT_DIM, PRIMARY_DIM))
        self.digit_bias = nn.Parameter(torch.full((NUM_CLASSES, DIGIT_DIM), 0.1)) if digit_bias else None
        self.decoder = Decoder(pixels=in_channels * image_size * image_size) if reconstruction else None
        if init == "official":
            self._official_init()

    @torch.no_grad()
    def _official_init(self) -> None:
        stds = {self.conv1: 0.05, self.primary_caps: 0.1}
        stds.update({layer: 0.1 for layer in (self.decoder.layers if self.decoder else ()) if isinstance(layer, nn.Linear)})
        for layer, std in stds.items():
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
            if layer.bias is not None:
                layer.bias.fill_(0.1)
        nn.init.trunc_normal_(self.W, std=0.1, a=-0.2, b=0.2)

    def primary_capsules(self, images: torch.Tensor) -> torch.Tensor:
        """B×C×28×28 images → B×1152×8 squashed primary capsules u_i.

        A capsule is the 8 channels 8t..8t+7 of type t at one grid position; capsules are numbered
        by (row, column, type). On channels_last tensors this grouping is a free view."""
        features = self.primary_caps(F.relu(self.conv1(images)))
        u = features.permute(0, 2, 3, 1).float()
        if self.primary_bias is not None:
            u = u * self.primary_scale + self.primary_bias
        return squash(u.reshape(len(images), self.num_primary, PRIMARY_DIM))

    def prediction_vectors(self, images: torch.Tensor) -> torch.Tensor:
        """B×C×28×28 images → B×1152×10×16 predictions û_{j|i} = W_ij u_i (Eq. 2)."""
        return prediction_vectors(self.primary_capsules(images), self.W)

    def digit_capsules(self, images: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
        """B×C×28×28 images → B×10×16 digit capsules v_j, routed `iterations` times (default: the
        model's own)."""
        return self.routing(self.prediction_vectors(images), iterations or self.routing_iterations,
                            detach_early=self.detach_routing, bias=self.digit_bias)

    def couplings(self, images: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
        """The coupling coefficients c_ij of every routing iteration: iterations×B×1152×10."""
        _, couplings = self.routing(self.prediction_vectors(images), iterations or self.routing_iterations,
                                    bias=self.digit_bias, return_couplings=True)
        return couplings

    def decode(self, capsules: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Reconstruct B×pixels images from the capsules of `classes` (B), or B×k×pixels, one image from
        each class's own capsule, for B×k classes (MultiMNIST)."""
        if self.decoder is None:
            raise ValueError("this CapsNet was built without a reconstruction decoder")
        if classes.dim() == 1:
            return self.decoder(capsules, classes)
        return torch.stack([self.decoder(capsules, c) for c in classes.unbind(dim=1)], dim=1)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                reconstruction_targets: torch.Tensor | None = None) -> ModelOutput:
        """Scores are the capsule lengths. The decoder sees the true class's capsule in training
        (targets given) and the predicted class's otherwise, as in the paper, and is scored against
        `reconstruction_targets`, by default the input images themselves.

        MultiMNIST (B×2 targets; reconstruction_targets B×2×1×36×36, each digit alone, shifted as in the
        merged image, like the official record's image_raw_1 and image_raw_2): T_k = 1 for both present
        classes in the margin loss, and each digit is reconstructed from its own class capsule against its
        own image: 0.0005 × (SSE₁ + SSE₂), as the official capsule_model.py `_remake` adds one 0.0005·SSE
        per target."""
        capsules = self.digit_capsules(images)
        lengths = capsules.norm(dim=-1)
        reconstruction = None
        if self.decoder is not None:
            classes = targets if targets is not None else predicted_classes(lengths, self.num_targets)
            reconstruction = self.decode(capsules, classes)
        if targets is None:
            return ModelOutput(lengths, capsules=capsules, reconstruction=reconstruction)
        margin = margin_loss(lengths, targets)
        if reconstruction is None:
            return ModelOutput(lengths, self.margin_weight * margin, margin, capsules=capsules)
        recon = reconstruction_loss(reconstruction, images if reconstruction_targets is None else reconstruction_targets)
        loss = self.margin_weight * margin + RECONSTRUCTION_WEIGHT * recon
        return ModelOutput(lengths, loss, margin, recon, capsules, reconstruction)


# ---------------------------------------------------------------------------------------------
# The baselines


class BaselineCNN(nn.Module):
    """Table 1's baseline: three 5×5 stride-1 convolutions of 256, 256 and 128 channels ('same'
    padding, no pooling), fully connected layers of 328 and 192, dropout, then a 10-way softmax
    with cross-entropy. 35,445,522 parameters, the paper's 35.4M."""

    def __init__(self, dropout: float = 0.5, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 256, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(256, 128, 5, padding=2), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * IMAGE_SIZE * IMAGE_SIZE, 328), nn.ReLU(inplace=True),
            nn.Linear(328, 192), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(192, NUM_CLASSES),
        )

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                reconstruction_targets: torch.Tensor | None = None) -> ModelOutput:
        logits = self.classifier(self.features(images)).float()  # no decoder: reconstruction_targets unused
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return ModelOutput(logits, loss)


class PooledCNN(nn.Module):
    """The baseline of the paper's other experiments. Section 6 (MultiMNIST): "two convolutional layers
    and two fully connected layers on top of them. The first layer has 512 convolution kernels of size
    9×9 and stride 1. The second layer has 256 kernels of size 5×5 and stride 1. After each
    convolutional layer the model has a pooling layer of size 2×2 and stride 2. The third layer is a
    1024D fully connected layer. All three layers have ReLU non-linearities. The final layer of 10
    units is fully connected", trained with a sigmoid cross-entropy loss. 'Same' padding because it
    gives the paper's parameter count: on 36×36, 24,563,978, the paper's 24.56M (5×5 in both layers,
    as in the official models/conv_model.py, would give 24.54M; that file's default VALID padding,
    12.7M: docs/official-code.md point 22).

    With one target (expanded MNIST, section 5.2: "a traditional convolutional model with MaxPooling
    and DropOut") the same network with dropout before the last layer and a softmax cross-entropy.
    With B×k targets the loss is the sigmoid cross-entropy against T_k = 1 for each present class
    (the official layers.py `evaluate` divides the multi-hot labels by 2; the paper does not say)."""

    def __init__(self, image_size: int, dropout: float = 0.0, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 512, 9, padding=4), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(512, 256, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2, ceil_mode=True),
        )
        side = math.ceil(math.ceil(image_size / 2) / 2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * side * side, 1024), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(1024, NUM_CLASSES),
        )

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                reconstruction_targets: torch.Tensor | None = None) -> ModelOutput:
        logits = self.classifier(self.features(images)).float()
        if targets is None:
            return ModelOutput(logits)
        if targets.dim() == 1:
            return ModelOutput(logits, F.cross_entropy(logits, targets))
        present = F.one_hot(targets, NUM_CLASSES).amax(dim=1).to(logits.dtype)
        return ModelOutput(logits, F.binary_cross_entropy_with_logits(logits, present, reduction="sum") / len(logits))


MODELS = ("capsnet", "baseline")


def build_model(model: str, *, routing_iterations: int | None = None, reconstruction: bool | None = None,
                image_size: int = IMAGE_SIZE, in_channels: int = 1, num_targets: int = 1,
                **capsnet_options) -> nn.Module:
    """The CapsNet (routing_iterations and reconstruction needed), or the baseline for the input: Table 1's
    CNN on 28×28, the pooled CNN of the paper's other experiments on larger inputs (dropout 0.5 with one
    target, none on MultiMNIST, as described)."""
    if model == "capsnet":
        return CapsNet(routing_iterations=routing_iterations, reconstruction=reconstruction, image_size=image_size,
                       in_channels=in_channels, num_targets=num_targets, **capsnet_options)
    if model == "baseline":
        if image_size == IMAGE_SIZE:
            return BaselineCNN(in_channels=in_channels)
        return PooledCNN(image_size, dropout=0.0 if num_targets > 1 else 0.5, in_channels=in_channels)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
