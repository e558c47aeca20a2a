"""Helpers shared by several test files (pytest puts tests/ on sys.path: `from helpers import ...`)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torch import nn


def expected_shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move down by dy and right by dx with zero fill: np.roll, then blank what wrapped around.
    Written independently of capslib.core.data.shift_images, so that it can check it."""
    out = np.roll(image, (dy, dx), axis=(-2, -1)).copy()
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., dy:, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, dx:] = 0
    return out


@contextlib.contextmanager
def model_calls(model_type: type[nn.Module]):
    """Record every forward call of a `model_type` module while the block runs, as a list of
    (training mode, images, targets or None), copied, in call order.

    Uses torch's global forward pre-hook, so a test can watch what train() or evaluate() feed the
    model from outside, without depending on how the training loop is written inside."""
    calls = []

    def hook(module, args):
        if isinstance(module, model_type):
            targets = args[1].detach().clone() if len(args) > 1 and args[1] is not None else None
            calls.append((module.training, args[0].detach().clone(), targets))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def cli(*argv) -> tuple[int, str, str]:
    """Run `capslib argv` in-process: (exit status, stdout, stderr). argparse mistakes raise
    SystemExit (status 2); capslib errors are returned by main()."""
    from capslib.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def one_line(stderr: str) -> str:
    """The single line of `stderr`, asserting there is exactly one and no traceback."""
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]
