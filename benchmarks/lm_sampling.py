"""Sampling throughput of tiny_gpt: tokens/s with the KV cache vs recomputing the prefix, batch 1…256.

    python -m benchmarks.lm_sampling                      # CPU, the default model (conf/model/tiny_gpt.yaml)
    python -m benchmarks.lm_sampling --device cuda --batch-sizes 1 16 256 4096

Every batch completes the same arithmetic prompts with ``--new-tokens`` new tokens (eos is ignored so
both modes do the same work). Tokens/s counts generated tokens; the best of ``--repeats`` timings is
kept. The last column is the speed-up of the KV cache.
"""

from __future__ import annotations

import argparse
import time

import torch

from rsft.models.tiny_gpt import TinyGPT
from rsft.tasks.arithmetic import ArithmeticTask


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--max-seq-len", type=int, default=48)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = TinyGPT(n_layer=args.n_layer, n_embd=args.n_embd, max_seq_len=args.max_seq_len).to(args.device).eval()
    task = ArithmeticTask(num_operands=3, num_sft=0, num_answer_only=0, num_eval=max(args.batch_sizes))
    prompts = task.prompts(task.pool("test"))
    print(
        f"tiny_gpt n_layer={args.n_layer} n_embd={args.n_embd} on {args.device}, {args.new_tokens} new tokens per row, "
        f"torch threads={torch.get_num_threads()}"
    )
    print(f"{'batch':>6} {'cache tok/s':>12} {'no-cache tok/s':>15} {'ratio':>7}")
    for b in args.batch_sizes:
        ids, mask = model.encode_prompts(prompts[:b])
        tokens = b * args.new_tokens
        cached = time_generate(model, ids, mask, args.new_tokens, True, args.repeats)
        recomputed = time_generate(model, ids, mask, args.new_tokens, False, args.repeats)
        print(f"{b:>6} {tokens / cached:>12,.0f} {tokens / recomputed:>15,.0f} {recomputed / cached:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
