"""What every causal language model in rsft shares: packing text into training rows, batched
sampling with a KV cache, the completion-only loss, round restarts, and verifier-based evaluation.

A subclass gives a tokenizer (``encode``/``decode``/``pad_id``/``eos_id``, see :mod:`rsft.models.tokenizer`)
and :meth:`CausalLM.step_logits`; everything else is here, so ``tiny_gpt`` and ``hf_causal_lm`` run
through the same proposal, acceptance and evaluation code.

Rows for training are right-padded: ``tokens`` (prompt, completion, eos, pad…) and ``loss_mask``
(true on the completion and its eos). Prompts for sampling are left-padded with a key mask; positions
count real tokens only, so a prompt sits at the same positions in both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from rsft.batch import Batch, field
from rsft.models.base import FineTunedModel
from rsft.models.kv_cache import keep_rows, repeat_rows
from rsft.models.token_sampling import choose_tokens


class ContextWindowError(ValueError):
    """A prompt (or prompt + completion) does not fit the model's context window."""


#: What dropping finished rows from the batch costs, in steps of one row: the rows kept have their cache
#: copied, which takes at most about as long as one step of theirs (SmolLM2-135M: ≤ 3.7 MB of cache and
#: 0.27 GFLOP per row and step). generate() drops them when the steps they would still take cost more.
DROP_COST_IN_ROW_STEPS = 1.0
#: A prefix shared by every prompt of a batch is read once when it is at least this many tokens long.
MIN_SHARED_PREFIX = 4


def shared_prefix_length(prompt_ids: torch.Tensor, key_mask: torch.Tensor) -> int:
    """Tokens at the start of every (left-padded) prompt that all prompts share, leaving each at least one."""
    lengths = key_mask.sum(1)
    m = int(lengths.min())
    starts = prompt_ids.shape[1] - lengths
    heads = prompt_ids.gather(1, starts[:, None] + torch.arange(m, device=prompt_ids.device)[None])
    differs = (heads != heads[:1]).any(0).nonzero()
    return min(int(differs[0]) if len(differs) else m, m - 1)


def prefill(
    network: Any, prompt_ids: torch.Tensor, key_mask: torch.Tensor, copies: int, pad_id: int
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """Read left-padded prompts into a cache once and expand it to ``copies`` rows per prompt.

    Returns the last position's logits ``[B·copies, V]``, the cache, and the key mask of its columns
    (row ``i·copies + j`` is prompt i). A prefix every prompt shares (a chat template's system turn) is
    read once, then the rest of each prompt, left-padded again after it: positions count real tokens,
    so every token sits where it sat in the prompt.
    """
    b, width = prompt_ids.shape
    shared = shared_prefix_length(prompt_ids, key_mask) if b > 1 else 0
    if shared >= MIN_SHARED_PREFIX:
        lengths = key_mask.sum(1)
        first = width - int(lengths[0])
        prefix = prompt_ids[:1, first : first + shared]
        positions = torch.arange(shared, device=prompt_ids.device)[None]
        _, cache = network.step_logits(prefix, positions, None, None, True)
        if hasattr(cache, "share_prefix"):  # held once for all rows (rsft's StaticKVCache)
            cache.share_prefix(b)
        else:
            cache = repeat_rows(cache, b)
        rest = lengths - shared
        w = int(rest.max())
        rest_mask = torch.arange(w, device=prompt_ids.device)[None] >= (w - rest)[:, None]
        rest_ids = prompt_ids[:, width - w :].masked_fill(~rest_mask, pad_id)
        mask = torch.cat([torch.ones((b, shared), dtype=torch.bool, device=prompt_ids.device), rest_mask], dim=1)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)[:, shared:]
        logits, cache = network.step_logits(rest_ids, positions, mask, cache, True)
    else:
        mask = key_mask
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        logits, cache = network.step_logits(prompt_ids, positions, mask, None, True)
    logits = logits[:, -1]
    if copies > 1:
        cache = repeat_rows(cache, copies)
        logits, mask = logits.repeat_interleave(copies, 0), mask.repeat_interleave(copies, 0)
    return logits, cache, mask


class CausalLM(FineTunedModel):
    """Base class of the language models rsft fine-tunes on accepted completions."""

    tokenizer: Any

    def __init__(
        self,
        max_seq_len: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        restart_from_base: bool = False,
        eval_k: int = 8,
        eval_temperature: float = 0.7,
        eval_max_new_tokens: int = 48,
        eval_seed: int = 2024,
        task: Any = None,
    ):
        """``task``: the run's task (``model.net.task: "@task"``), which poses the evaluation prompts and scores
        the completions; a model used on its own (no evaluation) needs none."""
        super().__init__(lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule)
        if max_seq_len < 2:
            raise ValueError(f"model.net.max_seq_len must be ≥ 2, got {max_seq_len}")
        if eval_k < 0:
            raise ValueError(f"model.net.eval_k must be ≥ 0 (0: greedy evaluation only), got {eval_k}")
        if not eval_temperature > 0:
            raise ValueError(f"model.net.eval_temperature must be positive, got {eval_temperature}")
        self.max_seq_len = int(max_seq_len)
        self.restart_from_base = bool(restart_from_base)
        self.eval_k = int(eval_k)
        self.eval_temperature = float(eval_temperature)
        self.eval_max_new_tokens = int(eval_max_new_tokens)
        self.eval_seed = int(eval_seed)
        self.task = task
        self._base_state: dict[str, torch.Tensor] | None = None
        self._eval_sums: dict[str, list[float]] = {}

    # -- what subclasses give -------------------------------------------------------------
    def step_logits(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache: Any,
        use_cache: bool,
    ) -> tuple[torch.Tensor, Any]:  # pragma: no cover - interface
        """Logits ``[B, T, V]`` for ``ids`` ``[B, T]`` at ``positions``, after the cached prefix.

        ``key_mask`` ``[B, past + T]`` marks real (non-pad) keys; None means all are real and the
        input is one causal block starting at position 0. Returns the new cache when ``use_cache``.
        """
        raise NotImplementedError

    # -- text <-> rows --------------------------------------------------------------------
    def _encode_checked(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt)
        if len(ids) == 0:
            raise ValueError("an empty prompt cannot be completed: every prompt needs at least one token")
        if len(ids) >= self.max_seq_len:
            raise ContextWindowError(
                f"the prompt {prompt[:60]!r}{'…' if len(prompt) > 60 else ''} is {len(ids)} tokens long, which "
                f"leaves no room to generate in the context window model.net.max_seq_len={self.max_seq_len}; "
                "raise model.net.max_seq_len or use shorter prompts (task difficulty)"
            )
        return ids

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids ``[B, P]`` and their key mask, on the model's device."""
        encoded = [self._encode_checked(p) for p in prompts]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e, dtype=torch.long)
            mask[row, width - len(e) :] = True
        return ids.to(self.device), mask.to(self.device)

    def encode_examples(self, prompts: Sequence[str], completions: Sequence[str]) -> Batch:
        """Training rows (``tokens``, ``loss_mask``, width ``max_seq_len``) for prompt + completion + eos."""
        n = len(prompts)
        tokens = torch.full((n, self.max_seq_len), self.tokenizer.pad_id, dtype=torch.long)
        loss_mask = torch.zeros((n, self.max_seq_len), dtype=torch.bool)
        for row, (prompt, completion) in enumerate(zip(prompts, completions)):
            p = self._encode_checked(prompt)
            c = self.tokenizer.encode(completion) + [self.tokenizer.eos_id]
            if len(p) + len(c) > self.max_seq_len:
                raise ContextWindowError(
                    f"prompt + completion {prompt + completion!r} is {len(p) + len(c)} tokens with eos, more than "
                    f"the context window model.net.max_seq_len={self.max_seq_len}; raise it"
                )
            tokens[row, : len(p) + len(c)] = torch.tensor(p + c)
            loss_mask[row, len(p) : len(p) + len(c)] = True
        return {"tokens": tokens.to(self.device), "loss_mask": loss_mask.to(self.device)}

    def pack(
        self, prompt_ids: torch.Tensor, key_mask: torch.Tensor, completion: torch.Tensor, length: torch.Tensor
    ) -> Batch:
        """Right-padded training rows from left-padded prompts and sampled completions (vectorised)."""
        n, width = prompt_ids.shape
        full = torch.cat([prompt_ids, completion], dim=1)
        prompt_len = key_mask.sum(1)
        start = width - prompt_len  # first real prompt token
        cols = torch.arange(self.max_seq_len, device=full.device)
        index = (start[:, None] + cols[None]).clamp(max=full.shape[1] - 1)
        tokens = full.gather(1, index)
        total = prompt_len + length
        inside = cols[None] < total[:, None]
        tokens = tokens.masked_fill(~inside, self.tokenizer.pad_id)
        loss_mask = (cols[None] >= prompt_len[:, None]) & inside
        return {"tokens": tokens, "loss_mask": loss_mask}

    def decode(self, completion: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row) for row in completion.tolist()]

    # -- sampling -------------------------------------------------------------------------
    def sampling_network(self) -> Any:
        """What :meth:`generate` runs with the KV cache: an object with :meth:`step_logits` whose caches
        :func:`~rsft.models.kv_cache.repeat_rows` and :func:`~rsft.models.kv_cache.keep_rows` accept.
        This model itself by default; a subclass may return a faster inference-only copy of its network
        (``hf_causal_lm``: a llama decoder with the LoRA adapters merged)."""
        return self

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        key_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        greedy: bool = False,
        use_cache: bool = True,
        num_samples: int = 1,
    ) -> Batch:
        """Complete a batch of left-padded prompts, ``num_samples`` (k) times each.

        Returns, for row ``i·k + j`` (prompt i's j-th completion): ``completion`` ``[B·k, N]`` (pad after
        eos), ``length`` (tokens including eos), ``finished`` (an eos was produced), ``log_prob`` (sum of the
        model's log-probabilities at temperature 1 — the policy's likelihood) and ``log_q`` (the same under
        the distribution actually sampled: temperature and top-k/top-p applied; 0 for greedy decoding).

        With the cache, each prompt is read once and its cache expanded to its k samples (a prefix that
        all prompts share is read once for all of them), and rows that have produced eos leave the batch.
        Each step draws one uniform per row, finished or not, and inverts that row's distribution at it:
        a row's tokens depend on its own logits and uniforms only, not on which other rows are still
        being generated.
        """
        if not greedy:
            if not temperature > 0:
                raise ValueError(f"sampling temperature must be positive, got {temperature} (proposal.temperature)")
            if not 0 < top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {top_p} (proposal.top_p)")
            if top_k < 0:
                raise ValueError(f"top_k must be ≥ 0 (0: off), got {top_k} (proposal.top_k)")
            if generator is None:
                raise ValueError("sampling needs a torch.Generator (greedy decoding does not)")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples (completions per prompt) must be a positive integer, got {num_samples!r}")
        b, width = prompt_ids.shape
        if width >= self.max_seq_len:
            raise ContextWindowError(
                f"prompts of {width} tokens leave no room to generate in model.net.max_seq_len={self.max_seq_len}"
            )
        steps = min(int(max_new_tokens), self.max_seq_len - width)
        if steps <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        k, n = num_samples, b * num_samples
        pad, eos = self.tokenizer.pad_id, self.tokenizer.eos_id
        dev = prompt_ids.device
        next_pos = key_mask.sum(1).repeat_interleave(k)  # position of each row's first new token
        out = torch.full((n, steps), pad, dtype=torch.long, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        length = torch.zeros(n, dtype=torch.long, device=dev)
        log_prob = torch.zeros(n, dtype=torch.float64, device=dev)
        log_q = torch.zeros(n, dtype=torch.float64, device=dev)
        rows = torch.arange(n, device=dev)  # the rows the network holds, in its order
        if use_cache:
            network = self.sampling_network()
            logits, cache, mask = prefill(network, prompt_ids, key_mask, k, pad)
        else:  # recompute the whole prefix every step (the baseline the KV cache is measured against)
            seq, mask = prompt_ids.repeat_interleave(k, 0), key_mask.repeat_interleave(k, 0)
            seq_pos = (mask.long().cumsum(1) - 1).clamp(min=0)
            logits = self.step_logits(seq, seq_pos, mask, None, False)[0][:, -1]
        for t in range(steps):
            uniforms = None if greedy else torch.rand(n, generator=generator, dtype=torch.float64, device=dev)
            live = ~done[rows]
            everyone = bool(live.all())
            alive = rows if everyone else rows[live]
            token, step_log_prob, step_log_q = choose_tokens(
                logits,
                None if everyone else live.nonzero().squeeze(1),
                None if greedy else uniforms[alive],
                temperature,
                top_k,
                top_p,
            )
            out[alive, t] = token
            length[alive] += 1
            log_prob[alive] += step_log_prob
            log_q[alive] += step_log_q
            done[alive] = token == eos
            if t == steps - 1 or bool(done.all()):
                break
            finished = done[rows]
            dropped = int(finished.sum())
            if use_cache and dropped * (steps - 1 - t) > DROP_COST_IN_ROW_STEPS * (len(rows) - dropped):
                keep = (~finished).nonzero().squeeze(1)
                cache = keep_rows(cache, keep)
                rows, mask = rows[keep], mask[keep]
            tokens = out[rows, t][:, None]  # pad for finished rows: their outputs are never read
            positions = (next_pos[rows] + t)[:, None]
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.bool, device=dev)], dim=1)
            if use_cache:
                logits, cache = network.step_logits(tokens, positions, mask, cache, True)
            else:
                seq, seq_pos = torch.cat([seq, tokens], dim=1), torch.cat([seq_pos, positions], dim=1)
                logits, _ = self.step_logits(seq, seq_pos, mask, None, False)
            logits = logits[:, -1]
        return {"completion": out, "length": length, "finished": done, "log_prob": log_prob, "log_q": log_q}

    # -- training -------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        fix = "use proposal=policy (or rows from encode_examples)"
        tokens = field(batch, "tokens", "a language model's training step", fix)
        mask = field(batch, "loss_mask", "a language model's training step", fix)
        used = mask.any(0).nonzero()
        width = int(used[-1]) + 1 if used.numel() else 2  # trim the right padding every row shares
        tokens, mask = tokens[:, :width], mask[:, :width]
        positions = torch.arange(width - 1, device=tokens.device).expand(tokens.shape[0], -1)
        logits, _ = self.step_logits(tokens[:, :-1], positions, None, None, False)
        target = tokens[:, 1:]
        weight = mask[:, 1:].float()
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        return (nll * weight.reshape(-1)).sum() / weight.sum().clamp(min=1.0)

    # Restart from the base model each round (STaR / ReST-EM): the round's sampling has already used the
    # current weights (train_dataloader runs before on_train_epoch_start), so reset just before training.
    def on_fit_start(self) -> None:
        if self.restart_from_base and self._base_state is None:
            self._base_state = {k: v.detach().clone() for k, v in self.state_dict().items()}

    def on_train_epoch_start(self) -> None:
        if self.restart_from_base and self._base_state is not None and self.current_epoch > 0:
            self.load_state_dict(self._base_state)
            for optimiser in self.trainer.optimizers:
                optimiser.state.clear()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._base_state is not None:
            checkpoint["rsft_base_state"] = self._base_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rsft_base_state" in checkpoint:
            self._base_state = checkpoint["rsft_base_state"]

    # -- evaluation -----------------------------------------------------------------------
    def _task(self) -> Any:
        if self.task is None or not hasattr(self.task, "score"):
            raise RuntimeError(
                "language-model evaluation needs the run's task, one that scores completions (task=arithmetic, "
                f"reasoning_gym): set model.net.task: '@task' (the model has {type(self.task).__name__})"
            )
        return self.task

    def evaluate_prompts(self, task: Any, ids: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Greedy accuracy (maj1@1), pass@k and maj@k (k = ``eval_k``) per prompt, as 0/1 tensors."""
        prompt_ids, key_mask = self.encode_prompts(task.prompts(ids))
        greedy = self.generate(prompt_ids, key_mask, max_new_tokens=self.eval_max_new_tokens, greedy=True)
        scored = task.score(ids, self.decode(greedy["completion"]))
        result = {"greedy": (scored["correct"] & greedy["finished"]).float()}
        if self.eval_k > 0:
            k = self.eval_k
            sampled = self.generate(
                prompt_ids.repeat_interleave(k, 0),
                key_mask.repeat_interleave(k, 0),
                max_new_tokens=self.eval_max_new_tokens,
                generator=generator,
                temperature=self.eval_temperature,
            )
            rep = ids.repeat_interleave(k)
            s = task.score(rep, self.decode(sampled["completion"]))
            correct = (s["correct"] & sampled["finished"]).view(-1, k)
            result["pass"] = correct.any(1).float()
            gold = task.answers(ids).tolist()
            answers = s["answer"].view(-1, k).tolist()
            valid = (s["has_answer"] & sampled["finished"]).view(-1, k).tolist()
            majority = []
            for row, ok, want in zip(answers, valid, gold):
                votes = Counter(a for a, v in zip(row, ok) if v)
                majority.append(float(bool(votes) and votes.most_common(1)[0][0] == want))
            result["majority"] = torch.tensor(majority, device=ids.device)
        return result

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = {}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        task = self._task()
        split = task.split_names[int(batch["split"][0])]
        generator = torch.Generator(self.device).manual_seed(self.eval_seed + 7 * batch_idx + 1009 * dataloader_idx)
        figures = self.evaluate_prompts(task, batch["prompt_id"], generator)
        sums = self._eval_sums.setdefault(split, [0.0, 0.0, 0.0, 0.0])
        sums[0] += len(batch["prompt_id"])
        sums[1] += float(figures["greedy"].sum())
        if "pass" in figures:
            sums[2] += float(figures["pass"].sum())
            sums[3] += float(figures["majority"].sum())

    def on_validation_epoch_end(self) -> None:
        values = {}
        for split, (n, greedy, passed, majority) in self._eval_sums.items():
            if n == 0:
                continue
            values[f"val/{split}_greedy_accuracy"] = greedy / n
            if self.eval_k > 0:
                values[f"val/{split}_pass_at_k"] = passed / n
                values[f"val/{split}_maj_at_k"] = majority / n
        if "val/train_greedy_accuracy" in values and "val/test_greedy_accuracy" in values:
            values["val/train_test_gap"] = values["val/train_greedy_accuracy"] - values["val/test_greedy_accuracy"]
        if values:
            self.log_dict(values, batch_size=1)
