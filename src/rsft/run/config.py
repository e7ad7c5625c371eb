"""Where rsft's Hydra configs live, and composing them outside of the command line (tests, tools)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: The repository root holds ``conf/`` and ``experiments/`` (an editable install keeps them there).
REPO_ROOT = Path(__file__).resolve().parents[3]


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
    """``${rsft_root:}`` resolves to the repository root (where ``outputs/`` lives); ``${rsft_mul:a,b}`` to a × b;
    ``${rsft_unless:a,b}`` to b when a is null; ``${rsft_pool_size:…}`` to the size of a problem pool."""
    if not OmegaConf.has_resolver("rsft_root"):
        OmegaConf.register_new_resolver("rsft_root", lambda: str(REPO_ROOT))
    # ``${rsft_mul:a,b}`` = a × b (integers), e.g. sampler.num_proposals = prompts × k.
    if not OmegaConf.has_resolver("rsft_mul"):
        OmegaConf.register_new_resolver("rsft_mul", lambda *xs: math.prod(int(x) for x in xs))
    # ``${rsft_pool_size:pool,num_sft,num_answer_only}``: problems in a training pool of task=arithmetic,
    # so proposal.prompts_per_round follows proposal.pool.
    # ``${rsft_unless:a,b}``: b when a is null, else null. debug=fast caps sampler.num_accepted only in runs that
    # count accepted rows, not in runs that set num_proposals (both set is an error).
    if not OmegaConf.has_resolver("rsft_unless"):
        OmegaConf.register_new_resolver("rsft_unless", lambda a, b: b if a is None else None)
    # ``${rsft_debug_cap:count}``: debug=fast's cap on sampler.num_accepted, 1000 rows or 4 prompt groups.
    if not OmegaConf.has_resolver("rsft_debug_cap"):
        OmegaConf.register_new_resolver("rsft_debug_cap", lambda count: 4 if count == "groups" else 1000)
    if not OmegaConf.has_resolver("rsft_pool_size"):
        OmegaConf.register_new_resolver("rsft_pool_size", pool_size)


def pool_size(pool: str, num_sft: int | None, num_answer_only: int) -> int:
    if num_sft is None:
        raise ValueError(
            "proposal.prompts_per_round follows task.num_sft, which is null (task=prompts: all training rows, counted "
            "only when the file is read); set proposal.prompts_per_round to the number of prompts per round"
        )
    sizes = {"sft": int(num_sft), "answer_only": int(num_answer_only), "both": int(num_sft) + int(num_answer_only)}
    if pool not in sizes:
        raise ValueError(f"proposal.pool must be one of {sorted(sizes)}, got {pool!r}")
    return sizes[pool]


def compose(
    overrides: list[str] | None = None, config_name: str = "train", return_hydra_config: bool = False
) -> DictConfig:
    """Compose the config as ``rsft-train`` would, without running anything (for tests and tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(
            config_name=config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config
        )
