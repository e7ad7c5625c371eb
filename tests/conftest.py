"""Shared test helpers: compose configs as rsft-train would and run them into a temporary run dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def compose_run(overrides: list[str], run_dir: Path):
    """The config ``rsft-train <overrides>`` would run, writing into ``run_dir``."""
    from rsft.run.config import compose

    return compose([*overrides, f"paths.output_dir={run_dir}"])


@pytest.fixture
def run_config(tmp_path):
    def make(*overrides: str, run_dir: Path | None = None):
        return compose_run(list(overrides), run_dir or tmp_path / "run")

    return make


def byte_bpe_tokenizer(texts: list[str], vocab_size: int, eos: str, pad: str, extra_special: tuple[str, ...] = ()):
    """A tiny byte-level BPE tokenizer trained on ``texts`` (byte-level: decoding gives back exactly the
    text), wrapped as a transformers fast tokenizer: what the HF model tests use instead of a download."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    bpe = tokenizers.ByteLevelBPETokenizer()
    specials = list(dict.fromkeys([eos, pad, *extra_special]))
    bpe.train_from_iterator(texts * 20, vocab_size=vocab_size, min_frequency=1, special_tokens=specials)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, pad_token=pad)


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models: several intra-op threads only fight over the shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
