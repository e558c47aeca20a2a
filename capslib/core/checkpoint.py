"""A run's model: built from its config, saved to and loaded from checkpoints.

Checkpoints are plain dicts of tensors and primitives, written atomically, loaded with
``weights_only=True`` (the safe default since torch 2.6). A checkpoint holds the model, the optimizer,
the number of completed epochs, the run's config, its per-epoch history and the global RNG states:
everything needed to continue the same trajectory.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .datasets import dataset_info
from .errors import CapslibError, RunFolderError
from .files import atomic_path
from .layout import LAST
from .model import OFFICIAL_MARGIN_WEIGHT, build_model
from .routing import routing_function

FORMAT = 1
MARGIN_WEIGHTS = {"paper": 1.0, "official": OFFICIAL_MARGIN_WEIGHT}  # by TrainConfig.loss_scaling


def model_for(config: TrainConfig) -> nn.Module:
    """The untrained model that a TrainConfig describes, built for the input its dataset declares, with
    the routing procedure its config names (the function: model.py knows no registry)."""
    info = dataset_info(config.dataset)
    return build_model(config.model, routing_iterations=config.routing_iterations,
                       reconstruction=config.reconstruction, image_size=info.image_size, in_channels=info.channels,
                       num_targets=info.targets, routing=routing_function(config.routing_procedure),
                       detach_routing=config.detach_routing, digit_bias=config.digit_bias,
                       primary_capsules=config.primary_capsules, init=config.init,
                       margin_weight=MARGIN_WEIGHTS[config.loss_scaling])


def atomic_save(obj, path: Path) -> None:
    # through a Python file, so that a failed write (a full disk) raises OSError, which atomic_path makes
    # one CapslibError naming the file, keeping the previous one
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        try:
            torch.save(obj, file)
        except RuntimeError as err:
            # torch's zip writer meets the OSError of a failed write, then fails again closing the archive
            # ("unexpected pos"): the OSError, which it chains, is what happened
            cause = err.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None


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


def checkpoint_file(path: Path | str) -> Path:
    """A checkpoint's path: the file given, or a run folder's last.pt."""
    path = Path(path)
    return path / LAST if path.is_dir() else path


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint file, or a run folder's last.pt; errors name the file."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # its advice (weights_only=False) is wrong for a file that is not ours
        raise RunFolderError(f"{path}: not a capslib checkpoint (not a file of tensors that torch.load reads)") from None
    except Exception as err:  # torch.load fails on foreign files in many ways (KeyError, IndexError, …)
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise RunFolderError(f"{path}: not a capslib checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise RunFolderError(f"{path}: not a capslib checkpoint (format {FORMAT})")
    _check_contents(path, checkpoint)
    return checkpoint


def load_resumable(path: Path) -> dict:
    """A checkpoint to continue training from: one with the optimizer and RNG states, which a
    weights-only file (best.pt, or a copy of it over last.pt) lacks; errors name the file."""
    checkpoint = load_checkpoint(path)
    if not all(isinstance(checkpoint.get(key), dict) for key in ("optimizer", "rng")):
        raise RunFolderError(f"{checkpoint_file(path)}: weights only, without the optimizer and RNG states "
                             "that resuming needs (a best.pt or a copy of one?); cannot resume from it")
    return checkpoint


def _check_contents(path: Path, checkpoint: dict) -> None:
    """What every caller reads from a checkpoint: present, of the right kind, and a valid config."""
    expected = {"epoch": int, "config": dict, "history": list, "model": dict}
    for key, kind in expected.items():
        if not isinstance(checkpoint.get(key), kind):
            raise RunFolderError(f"{path}: a damaged capslib checkpoint (no valid {key!r})")
    try:
        TrainConfig.from_dict(checkpoint["config"]).validate()
    except (CapslibError, TypeError) as err:
        raise RunFolderError(f"{path}: a damaged capslib checkpoint (its config: {err})") from None


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Restore Adam's moments and step counts but keep this optimizer's own settings (fused,
    capturable, tensor or float lr), which depend on the device, not on the run."""
    current = optimizer.state_dict()["param_groups"]
    groups = [{**{k: v for k, v in now.items() if k != "params"}, "params": old["params"]}
              for now, old in zip(current, saved["param_groups"])]
    optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """The trained model of a checkpoint (in eval mode), its config and the checkpoint itself."""
    path = checkpoint_file(path)
    checkpoint = load_checkpoint(path)
    config = TrainConfig.from_dict(checkpoint["config"])
    model = model_for(config)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors: torch lists them after a heading
        reason = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))[:120]
        raise RunFolderError(f"{path}: its weights do not fit its model ({reason})") from None
    return model.to(device).eval(), config, checkpoint
