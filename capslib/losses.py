"""The paper's losses (section 3 and 4.1), computed in float32."""

import torch
import torch.nn.functional as F

M_POS, M_NEG, LAMBDA = 0.9, 0.1, 0.5
# The margin loss's weight in the objective, beside 0.0005·SSE. The official code averages its
# per-class cost 0.5·pos + 0.5·λ·neg over the batch and the 10 classes (layers.py _margin_loss,
# evaluate): 0.5/10 = 1/20 of the paper's sum over classes.
MARGIN_WEIGHTS = {"paper": 1.0, "official": 0.05}


def margin_loss(lengths: torch.Tensor, targets: torch.Tensor,
                m_pos: float = M_POS, m_neg: float = M_NEG, lam: float = LAMBDA) -> torch.Tensor:
    """Eq. 4, summed over the classes and averaged over the batch:
    L_k = T_k max(0, m+ − ‖v_k‖)² + λ (1 − T_k) max(0, ‖v_k‖ − m−)².

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
    """Sum of squared pixel errors per image, averaged over the batch (before the 0.0005 weight).
    With k reconstructions per example (B×k×pixels against B×k×H×W digits), the sum of their k SSEs."""
    error = reconstruction.float().flatten(1) - images.float().flatten(1)
    return (error * error).sum(dim=1).mean()
