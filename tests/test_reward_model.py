"""task.reward_model: a sequence-classification model, built and saved in the test (random weights: the loading
and scoring code is what is tested), scores (question, reply) pairs in batches into the ``reward`` field.

Mutations seen failing these tests (each reverted): left padding and no attention mask (the encoder reward
model's scores then change with the batch: a causal decoder with rotary positions is immune to both, so the
batching test runs on both kinds); the chat text rendered with the generation prompt
instead of the assistant's reply; the pair format encoded as one concatenated string (no separators);
``probability`` for two labels as sigmoid of label 1 alone; the task keeping the verifier's score as reward.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import PROMPT_ROWS as ROWS  # noqa: E402
from conftest import byte_bpe_tokenizer, prompt_run, write_jsonl  # noqa: E402

from rsft.tasks.prompts import PromptsTask  # noqa: E402
from rsft.tasks.reward_model import RewardModel  # noqa: E402
from rsft.train import train  # noqa: E402

CHATML = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)
TEXTS = ["Sam has 3 pens and buys 4 more. How many pens does Sam have? 3+4=7 #### 7", "user assistant system"]
QUESTIONS = ["How many pens?", "Sam has 3 pens and buys 4 more. How many pens does Sam have?", "Q", "Why 7?", "x"]
REPLIES = ["7", "3+4=7\n#### 7", "It is 12 pens, because 3 + 4 = 7 and then more pens arrive.", "", "#### 7"]


#: A decoder reward model (reads the last real token; causal, rotary positions) and an encoder one (reads [CLS];
#: attends both ways, absolute positions: padding on the wrong side or unmasked changes its scores).
ARCHITECTURES = {
    "llama": {"num_key_value_heads": 1},
    "bert": {"type_vocab_size": 2},
}


def classifier(tokenizer, num_labels: int, model_type: str):
    config = transformers.AutoConfig.for_model(
        model_type,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=256,
        vocab_size=len(tokenizer),
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        **ARCHITECTURES[model_type],
    )
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(config)


def save(path: Path, tokenizer, num_labels: int = 1, model_type: str = "llama") -> Path:
    classifier(tokenizer, num_labels, model_type).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def chat_tokenizer():
    tok = byte_bpe_tokenizer(TEXTS, 300, eos="<|im_end|>", pad="<|pad|>", extra_special=("<|im_start|>",))
    tok.chat_template = CHATML
    return tok


def pair_tokenizer():
    """A tokenizer without a chat template whose text pairs get [CLS] q [SEP] r [SEP], r of token type 1 (BERT)."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = byte_bpe_tokenizer(TEXTS, 300, eos="[SEP]", pad="[PAD]", extra_special=("[CLS]",))
    cls, sep = tok.convert_tokens_to_ids("[CLS]"), tok.convert_tokens_to_ids("[SEP]")
    tok.backend_tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


@pytest.fixture(scope="module")
def chat_rm(tmp_path_factory) -> Path:
    return save(tmp_path_factory.mktemp("rm_chat"), chat_tokenizer())


@pytest.fixture(scope="module")
def pair_rm(tmp_path_factory) -> Path:
    return save(tmp_path_factory.mktemp("rm_pair"), pair_tokenizer(), num_labels=2, model_type="bert")


def one_by_one(model: RewardModel, questions, replies) -> torch.Tensor:
    """Each pair on its own, unpadded: what batched scoring must reproduce."""
    out = []
    for q, r in zip(questions, replies):
        inputs = model.encode([q], [r])
        assert bool(inputs["attention_mask"].all())  # one row: nothing padded
        with torch.no_grad():
            out.append(model.model(**inputs).logits[0].float())
    return torch.stack(out)


def test_chat_format_renders_the_question_and_the_reply_as_a_conversation(chat_rm):
    model = RewardModel(str(chat_rm))
    assert model.format == "chat" and model.describe()["num_labels"] == 1
    inputs = model.encode(["Why 7?"], ["Because 3 + 4 = 7."])
    text = model.tokenizer.decode(inputs["input_ids"][0][inputs["attention_mask"][0].bool()])
    assert text == "<|im_start|>user\nWhy 7?<|im_end|>\n<|im_start|>assistant\nBecause 3 + 4 = 7.<|im_end|>\n"
    with pytest.raises(ValueError, match="task.reward_model.format=chat but the tokenizer .* has no chat template"):
        RewardModel(str(save(chat_rm.parent / "plain", pair_tokenizer())), format="chat")


def test_pair_format_uses_the_tokenizers_own_separators(pair_rm):
    model = RewardModel(str(pair_rm))
    assert model.format == "pair"  # auto: no chat template
    tok = model.tokenizer
    inputs = model.encode(["Why 7?"], ["Because."])
    cls, sep = tok.convert_tokens_to_ids("[CLS]"), tok.convert_tokens_to_ids("[SEP]")
    want = [
        cls,
        *tok.encode("Why 7?", add_special_tokens=False),
        sep,
        *tok.encode("Because.", add_special_tokens=False),
        sep,
    ]
    assert inputs["input_ids"][0].tolist() == want


@pytest.mark.parametrize("fixture", ["chat_rm", "pair_rm"])
def test_batched_scores_equal_one_pair_at_a_time_for_any_batch_size(fixture, request):
    path = request.getfixturevalue(fixture)
    single = one_by_one(RewardModel(str(path)), QUESTIONS, REPLIES)
    expected = torch.sigmoid(single[:, 0] if single.shape[1] == 1 else single[:, 1] - single[:, 0])
    lengths = RewardModel(str(path)).encode(QUESTIONS, REPLIES)["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(QUESTIONS)  # every row a different length: padding is exercised
    for batch_size in (1, 2, 5):
        scores = RewardModel(str(path), batch_size=batch_size).score(QUESTIONS, REPLIES, torch.device("cpu"))
        assert scores.dtype == torch.float32 and scores.shape == (5,)
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert len(set(expected.tolist())) == len(QUESTIONS)  # the random model tells the pairs apart


def test_probability_and_logit_outputs_for_one_and_two_labels(chat_rm, pair_rm):
    one = one_by_one(RewardModel(str(chat_rm)), QUESTIONS[:3], REPLIES[:3])[:, 0]
    cpu = torch.device("cpu")
    logit = RewardModel(str(chat_rm), output="logit").score(QUESTIONS[:3], REPLIES[:3], cpu)
    torch.testing.assert_close(logit, one, atol=1e-5, rtol=1e-5)
    two = one_by_one(RewardModel(str(pair_rm)), QUESTIONS[:3], REPLIES[:3])
    probability = RewardModel(str(pair_rm)).score(QUESTIONS[:3], REPLIES[:3], cpu)
    torch.testing.assert_close(probability, two.softmax(-1)[:, 1], atol=1e-5, rtol=1e-5)
    difference = RewardModel(str(pair_rm), output="logit").score(QUESTIONS[:3], REPLIES[:3], cpu)
    torch.testing.assert_close(difference, two[:, 1] - two[:, 0], atol=1e-5, rtol=1e-5)


def test_long_chats_are_cut_from_the_left_so_the_reply_end_stays(chat_rm):
    model = RewardModel(str(chat_rm), max_length=12)
    inputs = model.encode(["a long question " * 20], ["7"])
    assert inputs["input_ids"].shape[1] == 12
    assert model.tokenizer.decode(inputs["input_ids"][0]).endswith("7<|im_end|>\n")


def test_a_reward_model_shipped_in_a_package_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "rsft_fake_reward"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('importing this package is not allowed')\n")
    save(package, chat_tokenizer())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    model = RewardModel("package:rsft_fake_reward")
    assert model.format == "chat" and "rsft_fake_reward" not in sys.modules
    with pytest.raises(ImportError, match="task.reward_model.path=package:rsft_no_such_reward: the package"):
        RewardModel("package:rsft_no_such_reward")


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"path": "/no/such/rm"}, FileNotFoundError, "task.reward_model.path='/no/such/rm' does not exist"),
        ({"batch_size": 0}, ValueError, "task.reward_model.batch_size must be a positive integer"),
        ({"format": "text"}, ValueError, "task.reward_model.format must be one of"),
        ({"output": "score"}, ValueError, "task.reward_model.output must be one of"),
    ],
)
def test_bad_reward_model_settings_name_the_key(chat_rm, settings, error, message):
    with pytest.raises(error, match=message):
        RewardModel(**{"path": str(chat_rm), **settings})


def test_a_directory_without_a_model_and_a_classifier_with_three_labels_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no saved transformers model"):
        RewardModel(str(tmp_path))
    with pytest.raises(ValueError, match="has 3 labels; a reward model has 1"):
        RewardModel(str(save(tmp_path / "three", chat_tokenizer(), num_labels=3)))


def test_the_task_puts_the_learned_reward_in_reward_and_keeps_the_verifier_for_correct(chat_rm, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    settings = {"question": "problem", "answer": "solution", "reference_format": "gsm8k", "test_size": 3}
    task = PromptsTask(path=str(path), reward_model={"path": str(chat_rm), "batch_size": 2}, **settings)
    plain = PromptsTask(path=str(path), **settings)
    ids = task.pool("sft")[:3]
    replies = [*task.gold_completions(ids[:2]), "wrong: 0"]
    scored, verified = task.score(ids, replies), plain.score(ids, replies)
    questions = [task.entries[int(i)]["question"] for i in ids]
    expected = RewardModel(str(chat_rm)).score(questions, replies, torch.device("cpu"))
    torch.testing.assert_close(scored["reward"], expected)
    assert not torch.equal(scored["reward"], verified["reward"])
    assert scored["correct"].tolist() == verified["correct"].tolist() == [True, True, False]
    assert task.records()["prompts.json"]["reward_model"]["format"] == "chat"


def test_rsft_train_with_a_reward_model_and_best_of_n(chat_rm, run_config, tmp_path):
    """Llama-2-style rejection sampling: the round keeps the top-reward reply of each prompt."""
    data = write_jsonl(
        tmp_path / "p.jsonl", ROWS + [{"problem": f"Extra {i}?", "solution": f"#### {i}"} for i in range(6)]
    )
    cfg = run_config(
        *prompt_run(data, f"task.reward_model.path={chat_rm}", "acceptance=best_of_n", "sampler.save_accepted=true")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [r["sampling/accepted"] for r in rows] == [4, 4]  # one reply per prompt, 4 prompts per round
    accepted = torch.load(run / "accepted" / "epoch_000.pt", weights_only=True)
    assert sorted(accepted["prompt_id"].tolist()) == sorted(set(accepted["prompt_id"].tolist()))
    assert bool(((accepted["reward"] >= 0) & (accepted["reward"] <= 1)).all())
    assert json.loads((run / "prompts.json").read_text())["reward_model"]["path"] == str(chat_rm)
