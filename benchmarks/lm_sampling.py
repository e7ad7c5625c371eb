"""Sampling throughput of tiny_gpt: tokens/s with the KV cache vs recomputing the prefix, batch 1…256.

    python -m benchmarks.lm_sampling                      # CPU, the default model (conf/model/tiny_gpt.yaml)
    python -m benchmarks.lm_sampling --device cuda --batch-sizes 1 16 256 4096
    python -m benchmarks.lm_sampling --threads 1 --publish lm_sampling_1thread   # also benchmarks/results/NAME/

Every batch completes the same arithmetic prompts with ``--new-tokens`` new tokens (eos is ignored so
both modes do the same work). Tokens/s counts generated tokens; the best of ``--repeats`` timings is
kept. The last column is the speed-up of the KV cache.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.__main__ import RESULTS_ROOT, machine, publish_report, run_and_capture
from rsft.models.tiny_gpt import TinyGPT
from rsft.tasks.arithmetic import ArithmeticTask
from rsft.tools.sources import import_closure


def time_generate(
    model: TinyGPT, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, use_cache: bool, repeats: int
) -> float:
    eos = model.tokenizer.eos_id
    model.tokenizer.eos_id = -1  # never stop early: both modes generate exactly new_tokens per row
    try:
        best = float("inf")
        for r in range(repeats):
            generator = torch.Generator(ids.device).manual_seed(r)
            if ids.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(
                ids, mask, max_new_tokens=new_tokens, generator=generator, temperature=0.7, use_cache=use_cache
            )
            if ids.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best
    finally:
        model.tokenizer.eos_id = eos


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lm_sampling", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--max-seq-len", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--publish", metavar="NAME", default=None, help="also write benchmarks/results/NAME/")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    torch.manual_seed(0)
    model = TinyGPT(n_layer=args.n_layer, n_embd=args.n_embd, max_seq_len=args.max_seq_len).to(args.device).eval()
    task = ArithmeticTask(num_operands=3, num_sft=0, num_answer_only=0, num_eval=max(args.batch_sizes))
    prompts = task.prompts(task.pool("test"))
    print(
        f"{info['date']}  {info['cpu']}  torch {info['torch']}  load {info['load_average']}\n"
        f"tiny_gpt n_layer={args.n_layer} n_embd={args.n_embd} on {args.device}, {args.new_tokens} new tokens per row, "
        f"torch threads={torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"{'batch':>6} {'cache tok/s':>12} {'no-cache tok/s':>15} {'ratio':>7}")
    start = time.perf_counter()
    rows = []
    for b in args.batch_sizes:
        ids, mask = model.encode_prompts(prompts[:b])
        tokens = b * args.new_tokens
        cached = time_generate(model, ids, mask, args.new_tokens, True, args.repeats)
        recomputed = time_generate(model, ids, mask, args.new_tokens, False, args.repeats)
        rows.append(
            {
                "batch": b,
                "cache_tokens_per_s": tokens / cached,
                "no_cache_tokens_per_s": tokens / recomputed,
                "ratio": recomputed / cached,
            }
        )
        print(f"{b:>6} {tokens / cached:>12,.0f} {tokens / recomputed:>15,.0f} {recomputed / cached:>7.2f}", flush=True)
    info["load_average_end"] = machine()["load_average"]
    return {"machine": info, "settings": vars(args), "rows": rows, "wall_seconds": time.perf_counter() - start}


def figures(results: dict) -> dict:
    """Named figures for the docs: ``batch <b> :: <field>``."""
    out: dict = {"wall_seconds": results["wall_seconds"]}
    for row in results["rows"]:
        for key, value in row.items():
            if key != "batch":
                out[f"batch {row['batch']} :: {key}"] = value
    return out


def main(argv: list[str] | None = None, results_root: Path = RESULTS_ROOT) -> dict:
    args = parse_args(argv)
    with torch.no_grad():
        if not args.publish:
            return run(args)
        results, printed, started = run_and_capture(run, args)
    argv = list(argv if argv is not None else sys.argv[1:])
    command = ["python", "-m", "benchmarks.lm_sampling", *argv]
    title = f"LM sampling benchmark: {args.publish}"
    sources = import_closure([Path(__file__)])
    directory = results_root / args.publish
    publish_report(directory, title, printed, results, figures(results), command, sources, started)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
