"""A reduced-size toy build end to end: concurrency, cache reuse, offline loading.

Two processes build the same tiny config into one empty cache at once (one builds, the
other waits on the lock); then this process finds the cache, and every artifact loads with
`from_pretrained` under HF_HUB_OFFLINE=1. The default-size build (minutes) is not run here.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from red_cli.toy.build import MAGIC_NAMES, ensure_toy, format_summary, resolve_toy_path
from red_cli.toy.settings import ToyConfig

TINY = {
    "n_reviews": 2000, "n_val_reviews": 100, "n_prompt_reviews": 600, "n_eval_prompts": 40,
    "vocab_size": 400, "xtok_vocab_size": 120, "policy_n_embd": 32, "policy_n_layer": 1,
    "policy_n_head": 2, "sft_steps": 30, "sft_batch_size": 16, "rm_n_embd": 32,
    "rm_n_layer": 1, "rm_n_head": 2, "rm_steps": 10, "rm_toy_steps": 10,
    "rm_corpus_groups": 100, "rm_sft_prompts": 50, "rm_corpus_only_steps": 4, "eval_corpus_pairs": 50,
    "eval_samples_per_prompt": 2, "max_new_tokens": 12,
}

# In a fresh process with no hub access: build (or wait), then load everything.
CHILD = """
import json, sys
from red_cli.toy.build import ensure_toy
from red_cli.toy.settings import ToyConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
art = ensure_toy(ToyConfig(**json.loads(sys.argv[1])), cache_root=sys.argv[2], progress=False)
AutoModelForCausalLM.from_pretrained(art.policy)
AutoTokenizer.from_pretrained(art.tokenizer)
for path in art.reward_models.values():
    AutoModelForSequenceClassification.from_pretrained(path)
    AutoTokenizer.from_pretrained(path)
print(json.dumps({"root": str(art.root)}))
"""


def _offline_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two concurrent builders of one config into one empty cache."""
    cache = tmp_path_factory.mktemp("red_cache")
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(TINY), str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_offline_env())
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    return cache, [p.returncode for p in procs], outputs


def _tree_hashes(root: Path) -> dict[str, str]:
    skip = {"summary.json"}  # holds timings
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def test_two_concurrent_builds_leave_one_valid_cache(built):
    cache, codes, outputs = built
    assert codes == [0, 0], [err[-3000:] for _, err in outputs]
    roots = {json.loads(out.strip().splitlines()[-1])["root"] for out, _ in outputs}
    assert len(roots) == 1
    builds = [p for p in (cache / "toy").iterdir() if p.is_dir()]
    assert [p.name for p in builds] == [Path(roots.pop()).name]  # no temp folders left
    assert (builds[0] / "COMPLETE").is_file()


def test_second_call_is_a_fast_cache_hit(built):
    cache, _, _ = built
    start = time.perf_counter()
    art = ensure_toy(ToyConfig(**TINY), cache_root=cache, progress=False)
    assert time.perf_counter() - start < 5
    assert art.root.parent == cache / "toy"
    assert resolve_toy_path("toy:rm_xtok", ToyConfig(**TINY), cache_root=cache) == \
        art.reward_models["toy_xtok"]
    for name in MAGIC_NAMES:
        if name != "toy:cost_model":  # this world has none (tests/unit/test_toy_cost.py)
            assert resolve_toy_path(name, ToyConfig(**TINY), cache_root=cache).exists()


def test_artifacts_load_and_score_with_the_plain_hf_recipe(built):
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    art = ensure_toy(ToyConfig(**TINY), cache_root=built[0], progress=False)
    tok = AutoTokenizer.from_pretrained(art.tokenizer)
    policy = AutoModelForCausalLM.from_pretrained(art.policy)
    gen = policy.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    enc = tok(["the plot was"], return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.bos_token_id
    out = policy.generate(**enc, max_new_tokens=5, do_sample=True, top_k=0)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 5

    texts = ["the plot was great.", "the plot was awful, but the acting was fine!"]
    for name, path in art.reward_models.items():
        rm_tok = AutoTokenizer.from_pretrained(path)
        rm = AutoModelForSequenceClassification.from_pretrained(path)
        assert rm.config.num_labels == 1 and rm.config.pad_token_id == rm_tok.pad_token_id
        assert rm_tok.padding_side == "right"
        batch = rm_tok(texts, padding=True, return_tensors="pt", return_offsets_mapping=True)
        offsets = batch.pop("offset_mapping")
        assert offsets.shape[:2] == batch["input_ids"].shape
        with torch.no_grad():
            scores = rm(**batch).logits[:, 0]
            alone = [rm(**rm_tok([t], return_tensors="pt")).logits[0, 0] for t in texts]
        assert torch.isfinite(scores).all(), name
        torch.testing.assert_close(scores, torch.stack(alone), rtol=1e-4, atol=1e-4)
    assert art.reward_models["toy_xtok"] != art.reward_models["toy"]
    xtok = AutoTokenizer.from_pretrained(art.reward_models["toy_xtok"])
    assert xtok.get_vocab() != tok.get_vocab()


def test_prompts_and_summary(built):
    art = ensure_toy(ToyConfig(**TINY), cache_root=built[0], progress=False)
    read = lambda p: [json.loads(line)["prompt"] for line in p.read_text().splitlines()]  # noqa: E731
    train, held_out = read(art.prompts_train), read(art.prompts_eval)
    assert len(held_out) == TINY["n_eval_prompts"] and len(train) > len(held_out)
    assert not set(train) & set(held_out)
    assert all(2 <= len(p.split()) <= 6 and p[-1].isalpha() for p in train + held_out)
    s = art.summary
    json.dumps(s)
    assert set(s["reward_models"]) == {"toy", "toy_xtok", "toy_bidir"}
    for rm in s["reward_models"].values():
        assert 0.0 <= rm["accuracy"] <= 1.0 and rm["params"] > 0
    assert s["policy"]["val_perplexity"] > 1.0 and s["build_seconds"] > 0
    assert -1.0 <= s["sft_samples"]["gold_mean"] <= 1.0
    text = format_summary(s)
    assert "toy_bidir" in text and str(art.root) in text


def test_same_settings_give_identical_files(built, tmp_path):
    """Rebuild with in-process RM training (num_processes=1) -> same bytes.

    The rebuild runs in a fresh interpreter: other tests in this session change process-wide
    torch state (thread count, deterministic flags) that a build must not depend on, but a
    shared process would make this comparison about them rather than about the build."""
    first = ensure_toy(ToyConfig(**TINY), cache_root=built[0], progress=False)
    code = ("import json, sys; from red_cli.toy.build import ensure_toy; "
            "from red_cli.toy.settings import ToyConfig; "
            "a = ensure_toy(ToyConfig(**json.loads(sys.argv[1]), num_processes=1), "
            "cache_root=sys.argv[2], progress=False); print(a.root)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(TINY), str(tmp_path)],
                         capture_output=True, text=True, check=True, timeout=300)
    again = Path(out.stdout.strip().splitlines()[-1])
    assert _tree_hashes(first.root) == _tree_hashes(again)
