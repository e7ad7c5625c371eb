"""task=reasoning_gym: seeded disjoint pools, prompts, answer extraction, the dataset's own scorer, and a
round of proposal=policy + acceptance=verifier through a tiny random-weight model (no real weights)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

pytest.importorskip("reasoning_gym")

from conftest import byte_bpe_tokenizer

from rsft.tasks.answers import AnswerReader  # noqa: E402
from rsft.tasks.reasoning_gym import ReasoningGymTask  # noqa: E402
from rsft.train import train  # noqa: E402

SUM2 = {"dataset": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "max_digits": 2}}


def task(**overrides) -> ReasoningGymTask:
    settings = {**SUM2, "num_sft": 40, "num_answer_only": 10, "num_eval": 30, "num_train_eval": 5, **overrides}
    return ReasoningGymTask(**settings)


def questions(t: ReasoningGymTask, pool: str) -> list[str]:
    return [t.entries[int(i)]["question"] for i in t.pool(pool)]


def test_pools_are_disjoint_seeded_and_the_test_set_does_not_move_with_the_training_pools():
    t = task()
    sft, extra, test = questions(t, "sft"), questions(t, "answer_only"), questions(t, "test")
    assert (len(sft), len(extra), len(test)) == (40, 10, 30)
    assert len(set(sft) | set(extra) | set(test)) == 80  # no question in two pools
    assert questions(task(), "test") == test  # same seed, same problems
    assert questions(task(seed=1), "test") != test
    bigger = task(num_sft=60)
    assert questions(bigger, "sft")[:40] == sft  # a pool grows by reading its stream further
    assert questions(bigger, "test") == test  # the held-out stream is its own
    sets = t.validation_sets(torch.device("cpu"))
    assert sets["test"]["prompt_id"].tolist() == t.pool("test").tolist()
    assert sets["train"]["prompt_id"].tolist() == t.pool("sft")[:5].tolist()


def extract_answer(completion: str, answer_format: str) -> str | None:
    return AnswerReader(answer_format)(completion)


def test_answers_are_read_as_configured():
    assert extract_answer("12 + 30 = 42", "last_number") == "42"
    assert extract_answer("It is -1,234.", "last_number") == "-1234"
    assert extract_answer("no idea", "last_number") is None
    assert extract_answer("think 3 <answer> 7 </answer> then 9", "tag") == "7"
    assert extract_answer("<answer>1</answer><answer>2</answer>", "tag") == "2"
    assert extract_answer("  8 \n", "full") == "8"
    assert extract_answer("   ", "full") is None


def test_score_uses_the_dataset_verifier_and_flags_what_dedup_and_majority_votes_read():
    t = task(num_answer_only=0)
    ids = t.pool("test")[:4]
    gold = [t.entries[int(i)]["answer"] for i in ids]
    wrong = str(int(gold[1]) + 1)
    completions = [f"The sum is {gold[0]}.", f"= {wrong}", "I cannot tell", f"The sum is   {gold[0]}."]
    scored = t.score(ids[[0, 1, 2, 0]], completions)
    assert scored["correct"].tolist() == [True, False, False, True]
    assert scored["reward"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert scored["has_answer"].tolist() == [True, True, False, True]
    assert torch.equal(scored["equations_ok"], scored["correct"])
    assert scored["answer"][0] == t.answers(ids[:1])[0] and scored["answer"][1] != t.answers(ids[1:2])[0]
    # The same text up to whitespace is the same reasoning path (dedup), a different text is not.
    assert scored["path_hash"][0] == scored["path_hash"][3] != scored["path_hash"][1]
    # reward is the dataset's own score_answer: reasoning-gym gives partial credit len(gold)/len(answer)
    # when the gold answer is inside a longer one (answer_format=full reads the whole completion).
    full = task(answer_format="full")
    pid = full.pool("test")[:1]
    answer = full.entries[int(pid)]["answer"]
    scored = full.score(pid, [f"{answer} apples"])
    assert scored["reward"].item() == pytest.approx(len(answer) / len(f"{answer} apples"))
    assert not scored["correct"].item()
    lenient = task(answer_format="full", correct_threshold=0.1)
    assert lenient.score(pid, [f"{answer} apples"])["correct"].item()


def test_prompts_are_chat_conversations_with_few_shot_turns_or_plain_text():
    t = task(few_shot=2, system_prompt="Be brief.")
    prompt = t.prompts(t.pool("test")[:1])[0]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt[-1]["content"] == t.entries[int(t.pool("test")[0])]["question"]
    assert prompt[2]["content"] == t.examples[0]["answer"]
    shots = {e["question"] for e in t.examples}
    assert not shots & set(questions(t, "both") + questions(t, "test"))  # examples are not problems
    plain = task(chat=False, few_shot=1, system_prompt=None)
    text = plain.prompts(plain.pool("sft")[:1])[0]
    assert text.startswith("Question: ") and text.endswith("\nAnswer:") and text.count("Question:") == 2
    assert plain.gold_completions(plain.pool("sft")[:1]) == [" " + plain.entries[0]["answer"]]
    with pytest.raises(ValueError, match="not in the sft pool"):
        plain.gold_completions(plain.pool("test")[:1])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": "no_such_dataset"}, "cannot build dataset 'no_such_dataset'"),
        ({"config": {"min_terms": 3, "max_terms": 2}}, "cannot build dataset 'chain_sum'"),
        ({"config": {"seed": 3}}, "task.config.seed is set by rsft"),
        ({"answer_format": "json"}, "task.answer_format='json' is not one of"),
        ({"num_eval": 0}, "task.num_eval must be positive"),
        ({"correct_threshold": 0.0}, "task.correct_threshold must be in"),
        ({"gold_template": "done"}, "task.gold_template must contain"),
        ({"config": {"min_terms": 2, "max_terms": 2, "max_digits": 1}, "num_sft": 200}, "too few distinct"),
    ],
)
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        task(**overrides)


# -- through a model: a tiny random llama with a word-level tokenizer and a ChatML chat template ----------
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture
def chat_model(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from rsft.models.hf_causal_lm import HFCausalLM

    texts = ["State the final answer to the following arithmetic problem: 45 - 7 = 38", "system user assistant"]
    tok = byte_bpe_tokenizer(texts, 300, eos="<|im_end|>", pad="<|im_end|>", extra_special=("<|im_start|>",))
    tok.chat_template = CHATML
    tok.save_pretrained(tmp_path / "tok")
    return HFCausalLM(
        config={
            "model_type": "llama",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 128,
        },
        tokenizer_path=str(tmp_path / "tok"),
        max_seq_len=96,
    ).eval()


def test_chat_prompts_render_with_the_tokenizer_template_and_a_round_reports_its_tokens_per_second(chat_model):
    from rsft.acceptance.base import AcceptAll
    from rsft.proposals.policy import PolicyProposal
    from rsft.sampling import rejection_sample

    t = task(system_prompt="Reply with only the final answer .")
    ids, mask = chat_model.encode_prompts(t.prompts(t.pool("sft")[:2]))
    first = chat_model.tokenizer.inner.decode(ids[0][mask[0]].tolist())
    assert first.startswith("<|im_start|>system\nReply") and first.endswith("=<|im_end|>\n<|im_start|>assistant\n")
    proposal = PolicyProposal(t, k=3, pool="sft", chunk_prompts=4, max_new_tokens=6)
    proposal.bind(chat_model)
    result = rejection_sample(
        proposal, AcceptAll(), num_proposals=24, chunk_size=12, generator=torch.Generator().manual_seed(0)
    )
    stats = proposal.round_stats(result.batch)
    assert stats["round_candidates"] == 24 and stats["round_prompts"] == 8
    # Generated tokens: every candidate's completion up to and including its eos (prompts not counted).
    assert stats["round_tokens"] == int(result.batch["length"].sum()) and stats["round_tokens_per_s"] > 0


def test_verifier_accepts_exactly_the_completions_reasoning_gym_scores_correct(chat_model, monkeypatch):
    """A model that answers right for even prompt ids: the verifier keeps exactly those rows."""
    from rsft.acceptance.lm import Verifier
    from rsft.proposals.policy import PolicyProposal
    from rsft.sampling import rejection_sample

    t = task()
    tok = chat_model.tokenizer
    asked: list[torch.Tensor] = []  # the problem ids of each generation batch, in order
    generated: list[int] = []  # tokens generated per batch (answers of different lengths, eos included)
    prompts = t.prompts
    monkeypatch.setattr(t, "prompts", lambda ids: (asked.append(torch.as_tensor(ids)), prompts(ids))[1])

    def scripted(prompt_ids, key_mask, *, max_new_tokens, generator=None, **_):
        texts = []
        for pid in asked[-1].repeat_interleave(2).tolist():
            gold = int(t.entries[pid]["answer"])
            texts.append(f"= {gold if pid % 2 == 0 else gold + 1}")
        rows = [tok.encode(x) + [tok.eos_id] for x in texts]
        completion = torch.full((len(rows), max(len(r) for r in rows)), tok.pad_id)
        for i, r in enumerate(rows):
            completion[i, : len(r)] = torch.tensor(r)
        zeros = torch.zeros(len(rows), dtype=torch.float64)
        length = torch.tensor([len(r) for r in rows])
        generated.append(int(length.sum()))
        return {"completion": completion, "length": length, "finished": length > 0, "log_prob": zeros, "log_q": zeros}

    monkeypatch.setattr(chat_model, "generate", scripted)
    proposal = PolicyProposal(t, k=2, pool="sft", chunk_prompts=40, max_new_tokens=8)
    proposal.bind(chat_model)
    result = rejection_sample(
        proposal, Verifier(), num_proposals=80, chunk_size=80, generator=torch.Generator().manual_seed(5)
    )
    kept = result.batch["prompt_id"]
    assert len(kept) == 40 and bool((kept % 2 == 0).all())
    stats = proposal.round_stats(result.batch)
    assert stats["round_correct_rate"] == 0.5 and stats["round_tokens"] == sum(generated)


def test_rsft_train_runs_task_reasoning_gym_end_to_end_with_a_random_model(run_config, tmp_path):
    pytest.importorskip("transformers")
    # experiment=rft_smollm2 with a random gpt2 (char tokenizer, plain-text prompts) in place of SmolLM2.
    cfg = run_config(
        "experiment=rft_smollm2",
        "task.num_sft=16",
        "task.num_eval=8",
        "task.num_train_eval=4",
        "task.chat=false",
        "task.system_prompt=null",
        "model.net.path=null",
        "+model.net.config={model_type:gpt2,n_layer:1,n_head:2,n_embd:32,n_positions:96}",
        "model.net.finetune=auto",
        "model.net.lora=null",
        "model.net.max_seq_len=96",
        "model.net.eval_k=2",
        "model.net.eval_max_new_tokens=6",
        "model.pretrain.steps=2",
        "proposal.k=2",
        "proposal.max_new_tokens=6",
        "trainer.max_epochs=2",
        "logger=none",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model is never right: empty rounds (on_empty=skip) warn
        train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and "val/test_greedy_accuracy" in metrics and "val/test_maj_at_k" in metrics
    assert metrics["sampling/round_candidates"] == 32 and metrics["sampling/round_tokens_per_s"] > 0
