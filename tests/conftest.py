"""Shared test helpers: compose configs as rsft-train would and run them into a temporary run dir."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest
import torch

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


#: Prompt-file rows (task=prompts) under other column names than the shipped example's: "problem" and "solution"
#: (GSM8K-style worked solutions ending in "#### n").
PROMPT_ROWS = [
    {
        "problem": f"Sam has {a} pens and buys {b} more. How many pens does Sam have?",
        "solution": f"{a}+{b}={a + b}\n#### {a + b:,}",
    }
    for a, b in [(3, 4), (10, 5), (7, 8), (1200, 30), (2, 2), (9, 1), (40, 2), (5, 6), (11, 11), (6, 7)]
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def coin_verifier(question: str, reply: str, reference: str) -> float:
    """A stand-in verifier for models that are never right: a reply "passes" on one parity of its CRC-32, so a
    prompt's group of differing replies mixes passes and failures."""
    return float(zlib.crc32(reply.encode()) % 2)


def prompt_run(path: Path, *overrides: str, experiment: str = "rft_prompts") -> list[str]:
    """experiment=rft_prompts (or ``experiment``) with a tiny random gpt2 (char tokenizer, plain-text prompts) on
    the file ``path``."""
    return [
        f"experiment={experiment}",
        f"task.path={path}",
        "task.test_path=null",
        "task.test_size=0.25",
        "task.question=problem",
        "task.answer=solution",
        "task.few_shot=0",
        "task.num_eval=null",
        "task.chat=false",
        "task.system_prompt=null",
        "model.net.path=null",
        "+model.net.config={model_type:gpt2,n_layer:1,n_head:2,n_embd:32,n_positions:112}",
        "model.net.finetune=auto",
        "model.net.lora=null",
        "model.net.max_seq_len=112",
        "model.net.eval_k=2",
        "model.net.eval_max_new_tokens=6",
        "model.pretrain.steps=2",
        "model.pretrain.batch_size=4",
        "model.batch_size=8",
        "proposal.k=2",
        "proposal.prompts_per_round=4",
        "proposal.chunk_prompts=4",
        "proposal.max_new_tokens=6",
        "trainer.max_epochs=2",
        "logger=none",
        *overrides,
    ]


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models: several intra-op threads only fight over the shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shared_and_expanded(model, prompts: list[str], k: int, tokens: torch.Tensor):
    """Logits of the first two generated positions, (a) from generate()'s prefill (each prompt read once,
    a shared prefix once for all, caches expanded) and (b) from every row read on its own (prompts
    repeat_interleaved k times before one prefill), feeding both the same next ``tokens``."""
    from rsft.models.causal_lm import prefill

    network = model.sampling_network()
    ids, mask = model.encode_prompts(prompts)
    pad = model.tokenizer.pad_id
    first_a, cache_a, mask_a = prefill(network, ids, mask, k, pad)
    rows_ids, rows_mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
    positions = (rows_mask.long().cumsum(1) - 1).clamp(min=0)
    first_b, cache_b = network.step_logits(rows_ids, positions, rows_mask, None, True)
    first_b = first_b[:, -1].clone()  # a network may reuse its logits buffer at the next call
    first_a = first_a.clone()
    step_positions = rows_mask.sum(1, keepdim=True)
    one = torch.ones((len(tokens), 1), dtype=torch.bool)
    second_a, _ = network.step_logits(tokens[:, None], step_positions, torch.cat([mask_a, one], 1), cache_a, True)
    second_a = second_a[:, -1].clone()
    second_b, _ = network.step_logits(tokens[:, None], step_positions, torch.cat([rows_mask, one], 1), cache_b, True)
    return (first_a, second_a), (first_b, second_b[:, -1])
