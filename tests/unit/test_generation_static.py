"""The static backend samples what `hf` samples: the same tokens from the same seed on CPU
(eager step), greedy identical, matching token frequencies from different seeds, on tiny GPT-2
and LLaMA models with ragged left-padded prompts; its sampling filters equal transformers'
warpers; LoRA weights come back exactly; `auto` picks by device and model."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from red_cli.config.schema import GenerationConfig
from red_cli.data import left_pad
from red_cli.generation import Sampling, build_generator, describe, resolve, static_supports
from red_cli.generation.sampling import filtered_scores
from red_cli.generation.static import merged_lora

V = 40
PAD, EOS = 0, 2
PROMPTS = [[1, 5, 6, 7, 8, 9], [1, 11], [1, 12, 13], [1, 14, 15, 16], [1], [1, 17, 18, 19, 20]]


class Tok:
    """What a generator reads of a tokenizer."""

    pad_token_id, eos_token_id = PAD, EOS

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(str(i) for i in row if i not in (PAD, EOS)) for row in ids.tolist()]


def tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "gpt2":
        config = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                            bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=64, bos_token_id=1, eos_token_id=EOS,
                             pad_token_id=PAD)
        model = LlamaForCausalLM(config)
    # Sharper than a random init: responses that end early, and distributions top-k/p can cut.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8)
    return model.eval()


def generator(backend: str, sampling: Sampling, **knobs):
    cfg = OmegaConf.structured(GenerationConfig(backend=backend))
    for key, value in knobs.items():
        cfg[backend][key] = value
    return build_generator(cfg, Tok(), sampling)


def sample(backend: str, model, sampling: Sampling, seed: int, prompts=PROMPTS, gen=None,
           **knobs):
    """A rollout of ``prompts`` on the model's device from ``seed``, by ``gen`` when given (a
    generator kept across rollouts), else by a new one of ``backend`` with ``knobs``."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    query, qmask = left_pad(prompts, pad_id=PAD)
    torch.manual_seed(seed)
    gen = gen or generator(backend, sampling, **knobs)
    return gen.generate(model, [""] * len(prompts), query.to(device), qmask.to(device))


SAMPLINGS = [Sampling(12), Sampling(12, temperature=0.7, top_k=5, top_p=0.9),
             Sampling(12, top_p=0.8, eos_token_ids=(EOS, 7)), Sampling(12, top_k=1)]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["plain", "t-k-p", "p-2eos", "greedy"])
@pytest.mark.parametrize("bucket", [1, 16])
def test_same_seed_same_tokens_as_hf(kind, sampling, bucket):
    model = tiny(kind)
    ref = sample("hf", model, sampling, seed=3)
    got = sample("static", model, sampling, seed=3, prompt_bucket=bucket)
    assert torch.equal(got.response_ids, ref.response_ids)
    assert torch.equal(got.response_mask, ref.response_mask)
    assert got.responses == ref.responses
    assert torch.equal(got.query_ids, ref.query_ids)  # the caller's prompts, not the bucket's


def test_greedy_is_the_argmax_path():
    """top_k=1 draws the argmax whatever the seed: a plain loop of full forwards agrees."""
    model = tiny("llama")
    got = sample("static", model, Sampling(10, top_k=1), seed=11)
    for i, prompt in enumerate(PROMPTS):
        ids = list(prompt)
        expected = []
        for _ in range(got.response_ids.shape[1]):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            expected.append(nxt)
            ids.append(nxt)
            if nxt == EOS:
                break
        n = int(got.response_mask[i].sum())
        assert got.response_ids[i, :n].tolist() == expected[:n]
        assert n == len(expected) or expected[n - 1] == EOS


def test_rows_end_at_eos_and_the_loop_stops_when_all_did():
    model = tiny("gpt2")
    with torch.no_grad():  # EOS by far the likeliest token after any token
        model.lm_head.weight[EOS] += 50 * model.transformer.wte.weight[5:].mean(0)
        model.transformer.wte.weight[EOS] = model.lm_head.weight[EOS]
    ref = sample("hf", model, Sampling(12), seed=0)
    for every in (1, 3):
        got = sample("static", model, Sampling(12), seed=0, stop_check_every=every)
        mask = got.response_mask
        assert mask.sum(1).max() < 12  # ended early
        assert torch.equal(got.response_ids[mask], ref.response_ids[ref.response_mask])
        assert (got.response_ids[~mask] == PAD).all()


def test_stop_check_every_does_not_change_tokens():
    model = tiny("gpt2")
    a = sample("static", model, Sampling(12), seed=5, stop_check_every=1)
    b = sample("static", model, Sampling(12), seed=5, stop_check_every=5)
    n = a.response_ids.shape[1]
    assert torch.equal(a.response_ids, b.response_ids[:, :n])
    assert (b.response_ids[:, n:] == PAD).all()


def test_the_kept_cache_gives_the_tokens_of_a_fresh_one():
    model = tiny("llama")
    gen = generator("static", Sampling(12))
    sample("static", model, Sampling(12), seed=0, gen=gen)
    second = sample("static", model, Sampling(12), seed=1, gen=gen)  # the same cache, reset
    fresh = sample("static", model, Sampling(12), seed=1)
    assert torch.equal(second.response_ids, fresh.response_ids)


# ----------------------------------------------------------------------------- frequencies
def chi2_p_value(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample chi-square test of equal token frequencies (counts [V] each)."""
    keep = (a + b) > 0
    a, b = a[keep].double(), b[keep].double()
    n_a, n_b = a.sum(), b.sum()
    pooled = (a + b) / (n_a + n_b)
    stat = ((a - n_a * pooled) ** 2 / (n_a * pooled) + (b - n_b * pooled) ** 2 / (n_b * pooled)).sum()
    dof = torch.tensor(float(int(keep.sum()) - 1), dtype=torch.float64)
    return float(1 - torch.special.gammainc(dof / 2, stat / 2))


def counts(rollout, position: int) -> torch.Tensor:
    tokens = rollout.response_ids[:, position][rollout.response_mask[:, position]]
    return torch.bincount(tokens, minlength=V)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_token_frequencies_match_hf_from_other_seeds(kind):
    model = tiny(kind)
    prompts = [[1, 5, 6], [1, 11]] * 1000
    sampling = Sampling(3, temperature=0.9, top_p=0.95)
    ref = sample("hf", model, sampling, seed=1, prompts=prompts)
    got = sample("static", model, sampling, seed=2, prompts=prompts)
    for position in range(3):
        assert chi2_p_value(counts(ref, position), counts(got, position)) > 1e-3
    # The test can fail: another temperature is told apart at once.
    colder = sample("static", model, Sampling(3, temperature=0.6, top_p=0.95), seed=2,
                    prompts=prompts)
    assert chi2_p_value(counts(ref, 0), counts(colder, 0)) < 1e-6


# ----------------------------------------------------------------------------- filters
def loop_filter(row: torch.Tensor, s: Sampling) -> torch.Tensor:
    """One row, plainly: temperature, the k largest (ties kept), the smallest nucleus."""
    scores = [float(x) / s.temperature for x in row]
    if s.top_k:
        kth = sorted(scores, reverse=True)[min(s.top_k, len(scores)) - 1]
        scores = [x if x >= kth else float("-inf") for x in scores]
    if s.top_p < 1:
        probs = torch.tensor(scores).softmax(0).tolist()
        order = sorted(range(len(scores)), key=lambda i: probs[i])  # ascending, stable
        kept, below = set(), 0.0
        for j, i in enumerate(order):
            below += probs[i]
            if below > 1 - s.top_p or j == len(order) - 1:
                kept.update(order[j:])
                break
        scores = [x if i in kept else float("-inf") for i, x in enumerate(scores)]
    return torch.tensor(scores)


@pytest.mark.parametrize("s", [Sampling(1, 0.7, 5, 0.9), Sampling(1, 1.0, 3, 1.0),
                               Sampling(1, 1.3, 0, 0.6), Sampling(1, 1.0, 0, 1.0),
                               Sampling(1, 0.5, 100, 0.2)])
def test_filters_equal_transformers_warpers_and_a_loop(s):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 30, generator=g) * 3
    logits[0, :4] = 5.0  # ties at the top
    got = filtered_scores(logits, s)
    expected = logits.clone()
    if s.temperature != 1.0:
        expected = TemperatureLogitsWarper(s.temperature)(None, expected)
    if s.top_k:
        expected = TopKLogitsWarper(s.top_k)(None, expected)
    if s.top_p < 1.0:
        expected = TopPLogitsWarper(s.top_p)(None, expected)
    torch.testing.assert_close(got, expected)
    for i in range(len(logits)):
        torch.testing.assert_close(got[i], loop_filter(logits[i], s), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- LoRA, auto
def test_lora_policy_samples_with_merged_weights_and_gets_its_own_back():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, lora_alpha=8,
                                                     target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    greedy = Sampling(10, top_k=1)
    ref = sample("hf", model, greedy, seed=0)  # through peft's unmerged adapters
    got = sample("static", model, greedy, seed=0)
    assert torch.equal(got.response_ids, ref.response_ids)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    with merged_lora(model) as merged:
        assert merged is model.get_base_model()
        assert not torch.equal(merged.model.layers[0].self_attn.q_proj.base_layer.weight,
                               before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])


def test_auto_picks_static_on_cuda_for_supported_models_only():
    model = tiny("gpt2")
    assert resolve("auto", "cpu", model) == "hf"
    assert resolve("auto", torch.device("cuda"), model) == "static"
    assert resolve("hf", "cuda", model) == "hf" and resolve("static", "cpu", model) == "static"

    class NoCache(torch.nn.Module):
        config = model.config

        def forward(self, input_ids, attention_mask=None):
            return input_ids

    assert static_supports(model) and not static_supports(NoCache())
    assert resolve("auto", "cuda", NoCache()) == "hf"
    gen = generator("auto", Sampling(4))
    assert gen.name == "hf" and describe(gen, "cpu", "auto").endswith("(auto)")
    assert not describe(gen, "cpu", "hf").endswith("(auto)")
    assert "CUDA graph" in generator("static", Sampling(4)).describe(torch.device("cuda"))
    assert "eager" in generator("static", Sampling(4)).describe(torch.device("cpu"))


@pytest.mark.slow
def test_compiled_step_draws_the_eager_steps_tokens_on_cpu():
    """compile=on on CPU (inductor, ~30 s): the compiled step's tokens are the eager step's."""
    model = tiny("gpt2")
    eager = sample("static", model, Sampling(12, top_p=0.9), seed=4, compile="off")
    compiled = sample("static", model, Sampling(12, top_p=0.9), seed=4, compile="on")
    assert torch.equal(compiled.response_ids, eager.response_ids)


def test_a_failing_compiler_falls_back_to_the_eager_step(monkeypatch, caplog):
    """compile=on whose compiled step raises (a compiler or graph-capture failure): the
    rollout is sampled eagerly, the failure said once, and not tried again."""
    import red_cli.generation.static as static

    calls = []

    def broken_compile(model, **kwargs):
        def step(**inputs):
            calls.append(1)
            raise RuntimeError("no C++ compiler")
        return step

    monkeypatch.setattr(static.torch, "compile", broken_compile)
    model = tiny("gpt2")
    gen = generator("static", Sampling(12), compile="on")
    with caplog.at_level("WARNING", logger="red"):
        first = sample("static", model, Sampling(12), seed=0, gen=gen)
        second = sample("static", model, Sampling(12), seed=0, gen=gen)
    assert len(calls) == 1 and caplog.text.count("compiling the decode step failed") == 1
    assert torch.equal(second.response_ids, sample("hf", model, Sampling(12), seed=0).response_ids)
    assert first.response_mask.any(1).all()


class _PastKeyValues(torch.nn.Module):
    """A causal LM whose forward takes the cache as `past_key_values` (transformers before
    the `cache` rename)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, use_cache=None, logits_to_keep=0, **kwargs):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, cache=past_key_values, use_cache=use_cache,
                          logits_to_keep=logits_to_keep, **kwargs)


def test_the_cache_goes_under_the_name_the_model_takes():
    from red_cli.errors import ConfigError
    from red_cli.generation.static import cache_argument

    model = tiny("gpt2")
    old = _PastKeyValues(model)
    assert cache_argument(model) == "cache" and cache_argument(old) == "past_key_values"
    ref = sample("static", model, Sampling(12), seed=2)
    assert torch.equal(sample("static", old, Sampling(12), seed=2).response_ids, ref.response_ids)

    class NoCache(torch.nn.Module):
        config = model.config

        def forward(self, input_ids, attention_mask=None, position_ids=None):
            return input_ids

    with pytest.raises(ConfigError, match="generation=static: NoCache.forward takes no KV cache"):
        sample("static", NoCache(), Sampling(4), seed=0)
