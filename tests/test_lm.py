"""Language models: tokenizer, tiny_gpt sampling (KV cache), the policy proposal, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import shared_and_expanded

from rsft.acceptance.lm import Verifier
from rsft.models import causal_lm
from rsft.models.causal_lm import ContextWindowError, shared_prefix_length
from rsft.models.tiny_gpt import TinyGPT
from rsft.models.token_sampling import filter_logits
from rsft.models.tokenizer import CharTokenizer
from rsft.proposals.policy import PolicyProposal
from rsft.sampling import rejection_sample
from rsft.tasks.arithmetic import ArithmeticTask


def tiny_model(**kw) -> TinyGPT:
    torch.manual_seed(0)
    settings = dict(n_layer=1, n_head=2, n_embd=32, max_seq_len=40, eval_k=2, eval_max_new_tokens=30)
    settings.update(kw)
    return TinyGPT(**settings)


def tiny_task(**kw) -> ArithmeticTask:
    settings = dict(num_operands=3, num_sft=32, num_answer_only=32, num_eval=16, num_train_eval=8, seed=1)
    settings.update(kw)
    return ArithmeticTask(**settings)


def test_char_tokenizer_round_trip_and_errors():
    tok = CharTokenizer()
    text = "12+3*4:3*4=12;12+12=24;#24"
    ids = tok.encode(text)
    assert len(ids) == len(text) and min(ids) >= 3
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_id] + tok.encode("junk")) == text  # stops at eos
    assert tok.decode([tok.pad_id, tok.bos_id] + ids) == text
    with pytest.raises(ValueError, match="not in the tokenizer alphabet"):
        tok.encode("é")
    with pytest.raises(ValueError, match="repeats"):
        CharTokenizer("aab")


def test_kv_cache_sampling_equals_recomputing_the_prefix():
    model = tiny_model().double().eval()  # float64: cached and recomputed logits agree to ~1e-15
    prompts = ["1+2*3:", "45-6:", "7:"]  # different lengths: left padding and positions are exercised
    ids, mask = model.encode_prompts(prompts)
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(11)
        runs.append(
            model.generate(
                ids, mask, max_new_tokens=20, generator=g, temperature=1.3, top_k=20, top_p=0.95, use_cache=use_cache
            )
        )
    assert torch.equal(runs[0]["completion"], runs[1]["completion"])
    assert torch.allclose(runs[0]["log_prob"], runs[1]["log_prob"], atol=1e-9)
    assert torch.allclose(runs[0]["log_q"], runs[1]["log_q"], atol=1e-9)


def test_left_padding_does_not_change_a_prompts_completion():
    model = tiny_model().double().eval()
    ids, mask = model.encode_prompts(["1+2*3-4:", "5:"])
    together = model.generate(ids, mask, max_new_tokens=15, greedy=True)
    alone_ids, alone_mask = model.encode_prompts(["5:"])
    alone = model.generate(alone_ids, alone_mask, max_new_tokens=15, greedy=True)
    assert torch.equal(together["completion"][1], alone["completion"][0])
    assert torch.allclose(together["log_prob"][1], alone["log_prob"][0], atol=1e-9)


@pytest.mark.parametrize("prompts", [["1+2*3:", "45-6:", "7:"], ["12+34-5:", "12+34*6:", "12+34-789:"]])
def test_prefill_is_shared_across_samples_and_prompts_without_changing_logits(prompts):
    """Same logits whether each prompt is read once and expanded to its k samples (and a prefix all prompts
    share read once) or every row is read on its own. The second prompt set shares "12+34" (5 tokens): the
    shared-prefix path. Mutations that fail it: expanding with repeat instead of repeat_interleave (rows
    of another prompt), positions of the re-padded rest counted from 0, the shared prefix cut one token
    too long (a token of the rest read twice)."""
    model = tiny_model().double().eval()
    k = 3
    tokens = torch.randint(
        3, model.tokenizer.vocab_size, (len(prompts) * k,), generator=torch.Generator().manual_seed(0)
    )
    ids, mask = model.encode_prompts(prompts)
    assert (shared_prefix_length(ids, mask) >= 4) == (prompts[0].startswith("12+34"))
    shared, alone = shared_and_expanded(model, prompts, k, tokens)
    for a, b in zip(shared, alone):
        assert a.shape == b.shape == (len(prompts) * k, model.tokenizer.vocab_size)
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    assert not torch.allclose(alone[0][0], alone[0][k])  # the prompts differ: a wrong expansion would show


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    model = tiny_model()
    ids, mask = model.encode_prompts(["12+3:", "12+3:", "12+4*5:"])
    assert shared_prefix_length(ids, mask) == 3  # "12+" (the first two prompts are equal to the end)
    ids, mask = model.encode_prompts(["12+3:", "12+3:"])
    assert shared_prefix_length(ids, mask) == 4  # one token left to each
    ids, mask = model.encode_prompts(["1:", "2:"])
    assert shared_prefix_length(ids, mask) == 0


def test_dropping_finished_rows_keeps_every_rows_completion(monkeypatch):
    """generate() drops rows that produced eos from the batch (their cache and mask rows too). Same
    completions, lengths and log-probabilities whether rows are dropped as soon as any finishes or never:
    a row's logits do not depend on which other rows share its batch, and its tokens depend on its own
    uniforms only (one per row per step, finished or not). Mutations that fail it: the kept rows' cache
    taken in the wrong order (keep_rows(cache, keep.flip(0))), the cache's last written column not moved
    with its row (StaticKVCache.batch_select_indices copying end - 1 columns)."""
    model = tiny_model().double().eval()
    ids, mask = model.encode_prompts(["1+2*3:", "45-6:", "7:", "8*9:"])
    # Make the token the model samples most often the eos: rows then stop at different steps.
    model.tokenizer.eos_id = -1
    free = model.generate(ids, mask, max_new_tokens=25, generator=torch.Generator().manual_seed(4), temperature=1.5)
    model.tokenizer.eos_id = int(free["completion"].flatten().mode().values)
    runs = []
    for cost in (0.0, float("inf")):  # drop at once / never
        monkeypatch.setattr(causal_lm, "DROP_COST_IN_ROW_STEPS", cost)
        g = torch.Generator().manual_seed(4)
        runs.append(model.generate(ids, mask, max_new_tokens=25, generator=g, temperature=1.5, num_samples=4))
    dropped, kept = runs
    lengths = dropped["length"]
    assert len(set(lengths.tolist())) > 3 and bool(dropped["finished"].any()) and not bool(dropped["finished"].all())
    for key in ("completion", "length", "finished"):
        assert torch.equal(dropped[key], kept[key])
    for key in ("log_prob", "log_q"):
        assert torch.allclose(dropped[key], kept[key], atol=1e-12, rtol=0)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, top_p=0.75))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.75 ≤ 0.5 + 0.3
    assert (~torch.isinf(filter_logits(logits, top_p=0.01))).sum() == 1  # the top token always stays


def test_sft_training_lowers_the_loss_and_packing_matches_encoding():
    model, task = tiny_model(), tiny_task()
    proposal = PolicyProposal(task, k=2, max_new_tokens=30)
    source = proposal.pretraining_source(model)
    losses = model.pretrain(source.sample, 60, 16, torch.Generator().manual_seed(0))
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    # pack(prompt, completion) gives the same training row as encoding the text directly
    ids, mask = model.encode_prompts(["12+3:", "4:"])
    completion = torch.tensor(
        [model.tokenizer.encode("15;#15") + [model.tokenizer.eos_id], model.tokenizer.encode("#4") + [2, 0, 0, 0, 0]]
    )
    length = torch.tensor([7, 3])
    packed = model.pack(ids, mask, completion, length)
    direct = model.encode_examples(["12+3:", "4:"], ["15;#15", "#4"])
    assert torch.equal(packed["tokens"], direct["tokens"]) and torch.equal(packed["loss_mask"], direct["loss_mask"])


def test_pretrain_learning_rate_and_cosine_schedule(monkeypatch):
    """model.pretrain.lr overrides model.net.lr; lr_schedule=cosine decays it to 5 % over the steps."""
    seen: list[float] = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    model, task = tiny_model(lr=1e-3), tiny_task()
    source = PolicyProposal(task, k=2).pretraining_source(model)
    model.pretrain(source.sample, 5, 4, torch.Generator().manual_seed(0))
    assert seen == [1e-3] * 5
    seen.clear()
    model.pretrain(source.sample, 11, 4, torch.Generator().manual_seed(0), lr=4e-3, lr_schedule="cosine")
    assert seen[0] == pytest.approx(4e-3) and seen[5] == pytest.approx(4e-3 * (0.05 + 0.95 * 0.5))
    assert seen[-1] == pytest.approx(4e-3 * 0.05)  # the last step runs at the floor
    assert all(a > b for a, b in zip(seen, seen[1:]))
    with pytest.raises(
        ValueError, match="model.pretrain.lr_schedule must be 'constant' or 'cosine' for TinyGPT, got 'linear'"
    ):
        model.pretrain(source.sample, 2, 4, torch.Generator(), lr_schedule="linear")
    with pytest.raises(ValueError, match="model.pretrain.lr must be positive"):
        model.pretrain(source.sample, 2, 4, torch.Generator(), lr=0.0)


def test_rounds_cover_the_chosen_pool_by_default():
    """proposal.prompts_per_round (hence sampler.num_proposals) follows proposal.pool."""
    from rsft.run.config import compose

    for pool, expected in (("sft", 1024), ("answer_only", 2900), ("both", 3924)):
        cfg = compose(["experiment=rft_arithmetic", f"proposal.pool={pool}", "proposal.k=3"])
        assert cfg.proposal.prompts_per_round == expected and cfg.sampler.num_proposals == 3 * expected
    cfg = compose(["experiment=rft_arithmetic", "proposal.pool=everything"])
    with pytest.raises(Exception, match="proposal.pool must be one of"):
        _ = cfg.proposal.prompts_per_round


def test_policy_proposal_groups_fields_and_round_stats():
    model, task = tiny_model().eval(), tiny_task()
    proposal = PolicyProposal(task, k=3, chunk_prompts=4, max_new_tokens=30)
    proposal.bind(model)
    result = rejection_sample(proposal, Verifier(), num_proposals=8 * 3, chunk_size=6 * 3, seed=0)
    stats = proposal.round_stats(result.batch)
    assert stats["round_candidates"] == 24 and stats["round_prompts"] == 8
    proposal.bind(model)
    batch = proposal.sample(12, torch.Generator().manual_seed(1))
    assert batch["prompt_id"].view(4, 3).unique(dim=1).shape == (4, 1)  # k consecutive rows per prompt
    assert batch["group"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for key in ("tokens", "loss_mask", "log_prob", "log_q", "reward", "correct", "path_hash", "finished"):
        assert batch[key].shape[0] == 12
    assert (batch["log_prob"] <= 0).all() and (batch["log_q"] <= 0).all()
    texts = [t.split(":", 1) for t in model.decode(batch["tokens"])]
    assert [p + ":" for p, _ in texts] == task.prompts(batch["prompt_id"])
    later = proposal.sample(12, torch.Generator().manual_seed(1))
    assert not set(later["prompt_id"].tolist()) & set(batch["prompt_id"].tolist())  # the round moves through its pool
    proposal.bind(model)
    again = proposal.sample(12, torch.Generator().manual_seed(1))
    assert torch.equal(again["tokens"], batch["tokens"])  # same seed, same round start: same samples


def test_frozen_policy_samples_the_snapshot_and_keeps_live_weights():
    model, task = tiny_model().eval(), tiny_task()
    proposal = PolicyProposal(task, k=2, policy="frozen", max_new_tokens=20)
    proposal.bind(model)
    first = proposal.sample(8, torch.Generator().manual_seed(5))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    live = {k: v.clone() for k, v in model.state_dict().items()}
    proposal.bind(model)
    second = proposal.sample(8, torch.Generator().manual_seed(5))
    assert torch.equal(first["tokens"], second["tokens"])
    assert all(torch.equal(live[k], v) for k, v in model.state_dict().items())


def test_bad_input_k_context_window_and_chunking():
    task = tiny_task()
    for k in (0, -1):
        with pytest.raises(ValueError, match="proposal.k"):
            PolicyProposal(task, k=k)
    model = tiny_model(max_seq_len=8)
    with pytest.raises(ContextWindowError, match="max_seq_len=8"):
        model.encode_prompts(["1+2*3-4+5:"])
    proposal = PolicyProposal(tiny_task(num_operands=5), k=2)
    proposal.bind(model)
    with pytest.raises(ContextWindowError, match="context window"):
        proposal.sample(4, torch.Generator().manual_seed(0))
    proposal = PolicyProposal(task, k=4)
    proposal.bind(tiny_model())
    with pytest.raises(ValueError, match="multiple of proposal.k=4"):
        proposal.sample(6, torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="language model"):
        PolicyProposal(task).bind(torch.nn.Linear(2, 2))


def test_verifier_that_raises_inside_sampling_names_the_prompt_id():
    task = tiny_task()

    def broken(problem, completion):
        raise ValueError("cannot parse")

    task.verifier = broken
    proposal = PolicyProposal(task, k=2, max_new_tokens=5)
    proposal.bind(tiny_model().eval())
    with pytest.raises(RuntimeError, match=r"raised on prompt id \d+ .*cannot parse"):
        proposal.sample(4, torch.Generator().manual_seed(0))
