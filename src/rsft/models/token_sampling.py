"""Choosing the next token of every row from the model's logits: greedy, or sampled at a temperature with
top-k / top-p, with the log-probabilities rsft records (the model's and the sampling distribution's).

Sampling inverts each row's cumulative distribution at one uniform number per row. ``torch.multinomial``
draws one exponential per vocabulary entry instead (49,152 per row for SmolLM2): at a few hundred rows
that cost as much as the model's forward. The inversion is done in two levels so that it stays as precise
as the float32 probabilities themselves: the row's mass in blocks of :data:`BLOCK` tokens (float32 sums,
accumulated in float64 across blocks) picks a block, a float64 cumulative sum inside the block picks the
token. Rows are processed a few at a time (:data:`ELEMENTS` logits): the temporaries stay small (in
cache, and below the size above which every allocation would be fresh pages from the system).
"""

from __future__ import annotations

import torch

#: Tokens per block of the two-level inversion.
BLOCK = 256
#: Rows × vocabulary entries processed at once (temporaries of this many floats: 2 MB; 10 rows of SmolLM2).
ELEMENTS = 1 << 19


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set whose probability reaches ``top_p``."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already reach top_p (the first token always stays).
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return logits


def _first_above(cumulative: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds ``target`` — never past the last positive
    weight, where float rounding could otherwise push it."""
    last = (cumulative < cumulative[:, -1:]).sum(-1, keepdim=True)
    return torch.minimum(torch.searchsorted(cumulative, target, right=True), last)


def invert_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of non-negative ``weights`` ``[R, V]``: the first index whose cumulative weight exceeds
    ``uniform × total`` (so an index of weight 0 is never chosen), and the row's total (float64)."""
    r, v = weights.shape
    if v <= BLOCK:  # one block: its float64 cumulative sum directly
        cumulative = weights.double().cumsum(-1)
        total = cumulative[:, -1]
        target = torch.minimum(uniforms * total, torch.nextafter(total, torch.zeros_like(total)))[:, None]
        return _first_above(cumulative, target).squeeze(1), total
    full = v // BLOCK
    sums = weights[:, : full * BLOCK].reshape(r, full, BLOCK).sum(-1)
    if full * BLOCK < v:
        sums = torch.cat([sums, weights[:, full * BLOCK :].sum(-1, keepdim=True)], dim=1)
    cumulative = sums.double().cumsum(-1)
    total = cumulative[:, -1]
    # u·total < total, so the token found has positive weight even where u·total rounds up.
    target = torch.minimum(uniforms * total, torch.nextafter(total, torch.zeros_like(total)))[:, None]
    block = _first_above(cumulative, target)
    before = torch.where(block > 0, cumulative.gather(1, (block - 1).clamp(min=0)), torch.zeros_like(target))
    cols = block * BLOCK + torch.arange(BLOCK, device=weights.device)
    inside = torch.where(cols < v, weights.gather(1, cols.clamp(max=v - 1)), 0.0).double().cumsum(-1)
    return (block * BLOCK + _first_above(inside, target - before)).squeeze(1), total


def choose_tokens(
    logits: torch.Tensor,
    rows: torch.Tensor | None,
    uniforms: torch.Tensor | None,
    temperature: float,
    top_k: int,
    top_p: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token for each of ``rows`` (indices into ``logits`` ``[n, V]``; None: all): ``(token, log_prob,
    log_q)``, float64 log-probabilities under the model (temperature 1) and under the sampling
    distribution (temperature, top-k/top-p; 0 for greedy decoding).

    ``uniforms`` (one per chosen row, in [0, 1)) None: greedy (argmax).
    """
    count = logits.shape[0] if rows is None else len(rows)
    step = max(1, ELEMENTS // logits.shape[-1])
    tokens, log_probs, log_qs = [], [], []
    plain = temperature == 1.0 and top_k == 0 and top_p == 1.0
    for start in range(0, count, step):
        x = logits[start : start + step] if rows is None else logits.index_select(0, rows[start : start + step])
        x = x.float()
        top = x.amax(-1, keepdim=True)
        shifted = x - top
        if uniforms is None:
            token = x.argmax(-1)
            log_q = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        else:
            scaled = shifted if temperature == 1.0 else shifted / temperature
            scaled = filter_logits(scaled, top_k, top_p)
            token, total = invert_cdf(scaled.exp(), uniforms[start : start + step])
            log_q = scaled.gather(1, token[:, None]).squeeze(1).double() - total.log()
        picked = shifted.gather(1, token[:, None]).squeeze(1).double()
        if uniforms is not None and plain:  # the sampling distribution is the model's
            log_prob = log_q
        else:
            log_prob = picked - shifted.exp_().sum(-1).double().log()
        tokens.append(token)
        log_probs.append(log_prob)
        log_qs.append(log_q)
    return torch.cat(tokens), torch.cat(log_probs), torch.cat(log_qs)
