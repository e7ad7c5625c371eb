"""Reading checkpoints as weights only, for ``model.init_checkpoint`` and ``resume``.

``torch.load(..., weights_only=False)`` unpickles anything a file holds, so a crafted checkpoint could run
code as it loads. rsft's own checkpoints (Lightning ``.ckpt`` files and ``torch.save(state_dict)``) hold only
tensors, numbers, strings and containers, which a weights-only load reads; anything else is refused with an
error that names the config key.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch


def load_weights_only(path: str | Path, key: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file holding more than weights raises a ValueError
    that starts with ``key`` (e.g. ``"model.init_checkpoint='x.ckpt'"``)."""
    # mmap: checking a large checkpoint (before Lightning reads it again) does not copy its tensors into memory.
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{key} holds more than weights ({unpickling_reason(err)}); rsft loads checkpoints as weights only, so "
            "code inside a file never runs. Give a .ckpt written by rsft or a state dict saved with "
            "torch.save(model.state_dict(), path)"
        ) from err


def unpickling_reason(err: pickle.UnpicklingError) -> str:
    """The part of a refused weights-only load that says what was refused (torch's message is a page long)."""
    found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global.*)?$", str(err), re.MULTILINE)
    return found.group(1).strip() if found else "not a weights-only checkpoint"
