"""End to end: rsft-train experiment=rft_arithmetic (tiny_gpt and hf_causal_lm), empty rounds, bad paths."""

from __future__ import annotations

import json
import warnings

import pytest
import pytorch_lightning as pl
import torch
from conftest import byte_bpe_tokenizer
from test_resume import TIMING

from rsft.data import EmptyAcceptedSetError
from rsft.train import train

SMALL = [
    "experiment=rft_arithmetic",
    "debug=fast",
    "logger=none",
    "task.num_sft=32",
    "task.num_answer_only=32",
    "task.num_eval=16",
    "task.num_train_eval=8",
    "proposal.pool=sft",
    "proposal.k=2",
    "proposal.chunk_prompts=16",
    "proposal.max_new_tokens=20",
    "model.net.eval_k=2",
    "model.net.eval_max_new_tokens=20",
]
ROUND_KEYS = (
    "sampling/acceptance_rate",
    "sampling/round_prompts_with_accepted",
    "sampling/round_correct_paths_per_prompt",
    "val/test_greedy_accuracy",
    "val/test_pass_at_k",
    "val/test_maj_at_k",
    "val/train_test_gap",
)


def rows(run):
    return [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]


def test_rft_arithmetic_smoke_logs_every_round_metric(run_config, tmp_path, caplog):
    # Enough SFT that some samples are correct, so rounds accept something.
    cfg = run_config(*SMALL, "model.pretrain.steps=150", "model.net.n_embd=32", "model.net.n_layer=1")
    with caplog.at_level("INFO", logger="rsft"):
        train(cfg)
    printed = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("epoch 1 validation:") and "test_greedy_accuracy" in m for m in printed)
    sampling_lines = [m for m in printed if m.startswith("epoch") and "accepted" in m]
    assert len(sampling_lines) == 2 and not any("log M" in m for m in sampling_lines)  # no envelope here
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (*ROUND_KEYS, "before/val/test_greedy_accuracy"):
        assert key in metrics, key
    epochs = rows(run)
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all("val/test_greedy_accuracy" in r and "sampling/round_candidates" in r for r in epochs)
    assert epochs[0]["sampling/round_candidates"] == 64  # 32 SFT prompts x k=2


@pytest.mark.parametrize(
    ("rule", "check"),
    [
        # the top-reward sample of every prompt is accepted with probability exp(0) = 1
        (["acceptance=boltzmann"], lambda m: m["sampling/round_prompts_with_accepted"] == 1.0),
        (
            ["acceptance=best_of_n"],
            lambda m: m["sampling/round_accepted_per_prompt"] == m["sampling/round_prompts_with_accepted"],
        ),
        (
            ["acceptance=max_per_prompt", "acceptance.max_per_prompt=1"],
            lambda m: m["sampling/round_accepted_per_prompt"] <= 1.0,
        ),
    ],
    ids=["boltzmann", "best_of_n", "max_per_prompt"],
)
def test_group_rules_run_through_train(rule, check, run_config, tmp_path):
    """Each per-prompt rule drives a whole run (sampling, acceptance, training, evaluation)."""
    cfg = run_config(
        *SMALL, *rule, "model.pretrain.steps=60", "model.net.n_embd=32", "model.net.n_layer=1", "eval_before=false"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a round may keep nothing (on_empty=skip trains on the gold rows)
        train(cfg)
    run = tmp_path / "run"
    epochs = rows(run)
    assert [r["epoch"] for r in epochs] == [0, 1]
    for row in epochs:
        assert row["sampling/round_candidates"] == 64
        assert check(row), row


def test_zero_variance_keeps_whole_groups_with_mixed_rewards_and_drops_the_rest(run_config, tmp_path):
    """Each kept prompt keeps all k samples and their rewards differ; some prompts are kept, some dropped.

    The model is trained enough that some prompts have both right and wrong samples (checked: the kept count
    is positive), so the test cannot pass on an empty round.
    """
    cfg = run_config(
        *SMALL,
        "acceptance=zero_variance",
        "model.pretrain.steps=150",
        "model.net.n_embd=32",
        "model.net.n_layer=1",
        "eval_before=false",
        "sampler.save_accepted=true",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
    run, k, kept = tmp_path / "run", 2, 0
    for row in rows(run):
        accepted = torch.load(run / "accepted" / f"epoch_{row['epoch']:03d}.pt")
        rewards: dict[int, list[float]] = {}
        for prompt, reward in zip(accepted["prompt_id"].tolist(), accepted["reward"].tolist()):
            rewards.setdefault(prompt, []).append(reward)
        for prompt, group in rewards.items():
            assert len(group) == k and len(set(group)) > 1, (prompt, group)  # the whole group, rewards mixed
        kept += len(rewards)
        assert len(rewards) < row["sampling/round_prompts"]  # prompts with equal rewards were dropped
    assert kept > 0, "no prompt had mixed rewards: the test would be vacuous"


def test_hf_causal_lm_random_weights_with_lora_runs_end_to_end(run_config, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    cfg = run_config(
        *SMALL,
        "model=hf_causal_lm",
        "model.pretrain.steps=3",
        "model.net.max_seq_len=40",
        "model.net.config.n_layer=1",
        "model.net.config.n_embd=32",
        "model.net.config.n_head=2",
        "+model.net.lora={r:4,alpha:8}",
        "model.batch_size=16",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model accepts nothing: on_empty=skip warns, gold rows train
        train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and "val/test_greedy_accuracy" in metrics


def test_hf_causal_lm_from_a_local_directory_and_a_missing_one(tmp_path):
    transformers = pytest.importorskip("transformers")
    from rsft.models.hf_causal_lm import HFCausalLM

    with pytest.raises(FileNotFoundError, match="model.net.path='/no/such/model' does not exist"):
        HFCausalLM(path="/no/such/model")
    tok = byte_bpe_tokenizer(["1+2:1+2=3;#3", "3*4-5:3*4=12;12-5=7;#7"], 280, eos="<eos>", pad="<pad>")
    config = transformers.GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    model = HFCausalLM(path=str(tmp_path / "lm"), max_seq_len=32).eval()
    assert model.tokenizer.decode(model.tokenizer.encode("3*4=12;#7") + [model.tokenizer.eos_id, 5]) == "3*4=12;#7"
    ids, mask = model.encode_prompts(["1+2:", "3*4-5:"])
    runs = [
        model.generate(ids, mask, max_new_tokens=6, generator=torch.Generator().manual_seed(0), use_cache=c)
        for c in (True, False)
    ]
    assert torch.equal(runs[0]["completion"], runs[1]["completion"])
    assert torch.allclose(runs[0]["log_prob"], runs[1]["log_prob"], atol=1e-4)


def test_a_round_that_accepts_nothing_errors_with_diagnostics_or_skips_with_a_warning(run_config, tmp_path):
    nothing = [
        *SMALL,
        "model.pretrain.steps=0",
        "model.net.n_embd=16",
        "model.net.n_layer=1",
        "acceptance=reward_threshold",
        "acceptance.threshold=2.0",
        "eval_before=false",
    ]
    with pytest.raises(EmptyAcceptedSetError, match=r"accepted nothing.*round_prompts=32.*round_correct_rate=0"):
        train(run_config(*nothing, "sampler.on_empty=error"))
    with pytest.warns(UserWarning, match=r"training on the proposal's 64 extra rows only"):  # 32 gold rows, 2 passes
        train(run_config(*nothing, "sampler.on_empty=skip", run_dir=tmp_path / "skip_gold"))
    # Nothing to train on at all: each round is skipped, but the run goes on to the next round (Lightning
    # alone would end the whole fit at the first epoch without a training batch).
    with pytest.warns(UserWarning, match=r"skipping this epoch's training"):
        train(
            run_config(
                *nothing,
                "sampler.on_empty=skip",
                "proposal.mix_gold=false",
                "trainer.max_epochs=3",
                run_dir=tmp_path / "skip",
            )
        )
    epochs = rows(tmp_path / "skip")
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert all(
        r["sampling/accepted"] == 0 and "val/test_greedy_accuracy" in r and "train/loss" not in r for r in epochs
    )


class FirstBatchWeights(pl.Callback):
    """Records, per epoch, whether the first training batch sees the model's base weights."""

    seen: dict[int, bool] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            base = module._base_state
            self.seen[trainer.current_epoch] = all(torch.equal(base[k], v) for k, v in module.state_dict().items())


def test_restart_from_base_resets_weights_before_each_rounds_training(run_config):
    FirstBatchWeights.seen.clear()
    cfg = run_config(
        *SMALL,
        "model.pretrain.steps=20",
        "model.net.n_embd=16",
        "model.net.n_layer=1",
        "model.net.restart_from_base=true",
        "trainer.max_epochs=3",
        "eval_before=false",
        f"+callbacks.probe._target_={__name__}.FirstBatchWeights",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
    assert FirstBatchWeights.seen == {0: True, 1: True, 2: True}  # every round trains from the base weights


@pytest.mark.slow
def test_rft_rounds_raise_test_accuracy_above_the_sft_baseline(run_config, tmp_path):
    """The issue's headline on a fixed seed: two rounds of the default experiment beat its SFT model.

    A regression test on one fixed seed, not a statistical test: seed 0 measured 0.514 → 0.608 → 0.608
    on the development machine (500 test problems; seeds 0–2 rise by 0.14–0.16 over 5 rounds, see
    experiments/README.md). The 5-point margin sits between that (+9.4) and the gold-only control of
    the same seed (+3.0 after two rounds), so a regression that stops learning from the accepted
    samples fails, while another CPU's float rounding (a different but equally good trajectory) has
    about 2 binomial sds of room.
    """
    cfg = run_config("experiment=rft_arithmetic", "logger=none", "trainer.max_epochs=2", "seed=0")
    train(cfg)
    run = tmp_path / "run"
    before = json.loads((run / "before.json").read_text())["before/val/test_greedy_accuracy"]
    after = [row["val/test_greedy_accuracy"] for row in rows(run)]
    assert before > 0.3, "the SFT model itself is broken"
    assert min(after) >= before + 0.05, (before, after)


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def test_frozen_policy_resumes_sampling_the_snapshot(run_config, tmp_path):
    """proposal.policy=frozen, stopped after round 1 and resumed: the rounds after it sample the same snapshot.

    The snapshot (the model of the first round) is in the checkpoint; without it the resumed run would take
    a new snapshot of the fine-tuned model and its later rounds would sample that instead.
    """
    frozen = [*SMALL, "proposal.policy=frozen", "model.pretrain.steps=40", "model.net.n_embd=16", "model.net.n_layer=1"]
    frozen += ["eval_before=false", "sampler.on_empty=skip"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(run_config(*frozen, "trainer.max_epochs=2", run_dir=tmp_path / "whole"))
        train(run_config(*frozen, "trainer.max_epochs=1", run_dir=tmp_path / "stopped"))
        assert len(rows(tmp_path / "stopped")) == 1
        train(run_config(*frozen, "trainer.max_epochs=2", "resume=auto", run_dir=tmp_path / "stopped"))
    whole, resumed = rows(tmp_path / "whole"), rows(tmp_path / "stopped")
    assert [r["epoch"] for r in resumed] == [0, 1]
    assert [untimed(r) for r in resumed] == [untimed(r) for r in whole]  # every round, exactly
    final = [untimed(json.loads((tmp_path / d / "metrics.json").read_text())) for d in ("whole", "stopped")]
    assert final[0] == final[1]
