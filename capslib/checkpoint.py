"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded with
``weights_only=True`` (the safe default since torch 2.6).

A checkpoint holds the model, the optimizer, the number of completed epochs, the run's config, its
per-epoch history and the global RNG states: everything needed to continue the same trajectory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .errors import RunFolderError
from .files import atomic_path
from .model import model_for

FORMAT = 1
LAST, BEST = "last.pt", "best.pt"


def atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch: int,
                    config: TrainConfig, history: list[dict], sessions: list[dict] = ()) -> None:
    """Without an optimizer, the weights alone (best.pt): enough to evaluate, not to resume. The run's
    session records travel with it, so a run folder whose logs were lost can rebuild them whole."""
    state = {"format": FORMAT, "epoch": epoch, "config": config.to_dict(), "history": history,
             "sessions": list(sessions), "model": model.state_dict()}
    if optimizer is not None:
        state.update(optimizer=optimizer.state_dict(), rng=rng_states())
    atomic_save(state, path)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint file, or a run folder's last.pt; errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise RunFolderError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load fails on foreign files in many ways (KeyError, IndexError, …)
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise RunFolderError(f"{path}: not a readable capslib checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise RunFolderError(f"{path}: not a capslib checkpoint (format {FORMAT})")
    return checkpoint


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Restore Adam's moments and step counts but keep this optimizer's own settings (fused,
    capturable, tensor or float lr), which depend on the device, not on the run."""
    current = optimizer.state_dict()["param_groups"]
    groups = [{**{k: v for k, v in now.items() if k != "params"}, "params": old["params"]}
              for now, old in zip(current, saved["param_groups"])]
    optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """The trained model of a checkpoint (in eval mode), its config and the checkpoint itself."""
    checkpoint = load_checkpoint(path)
    config = TrainConfig.from_dict(checkpoint["config"])
    model = model_for(config)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), config, checkpoint
