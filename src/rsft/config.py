"""Where rsft's Hydra configs live, and composing them outside of the command line (tests, tools)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: The repository root holds ``conf/`` and ``experiments/`` (an editable install keeps them there).
REPO_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """The ``conf/`` directory: ``$RSFT_CONF_DIR`` if set, else the repository's own."""
    configured = os.environ.get("RSFT_CONF_DIR")
    path = Path(configured) if configured else REPO_ROOT / "conf"
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(
            f"rsft cannot find its Hydra configs at {path} (no train.yaml there). Install rsft from a "
            "checkout with `pip install -e .` so conf/ stays beside the code, or set RSFT_CONF_DIR to a conf/ directory"
        )
    return path


def register_resolvers() -> None:
    """``${rsft_root:}`` resolves to the repository root (where ``outputs/`` lives); ``${rsft_mul:a,b}`` to a × b."""
    if not OmegaConf.has_resolver("rsft_root"):
        OmegaConf.register_new_resolver("rsft_root", lambda: str(REPO_ROOT))
    # ``${rsft_mul:a,b}`` = a × b (integers), e.g. sampler.num_proposals = prompts × k.
    if not OmegaConf.has_resolver("rsft_mul"):
        OmegaConf.register_new_resolver("rsft_mul", lambda *xs: math.prod(int(x) for x in xs))


def compose(overrides: list[str] | None = None, config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """Compose the config as ``rsft-train`` would, without running anything (for tests and tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)
