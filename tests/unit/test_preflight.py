"""models.preflight.check_models: bad model / tokenizer paths, offline hub ids, chat templates,
vocabulary sizes and model kinds, each one ConfigError naming the key and the path. Only
configs and tokenizers are built (no weights), so this is fast."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from transformers import BertConfig, DistilBertConfig, GPT2Config

from red_cli.config.schema import PolicyConfig, RewardModelConfig
from red_cli.errors import ConfigError
from red_cli.models import load_policy, load_reward_model, load_tokenizer
from red_cli.models.preflight import check_models
from red_cli.toy import ToyConfig
from red_cli.toy.tokenizer import train_bpe

CHAT = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.fixture(scope="module")
def tok():
    return train_bpe(["the cat sat on the mat, a good film and a bad film"] * 4, vocab_size=300)


def _save(folder, config, tokenizer=None, chat=False):
    config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.chat_template = CHAT if chat else None
        tokenizer.save_pretrained(folder)
    return str(folder)


def _gpt2(arch, vocab, **kw):
    return GPT2Config(vocab_size=vocab, n_layer=1, n_embd=8, n_head=2, n_positions=32,
                      bos_token_id=1, eos_token_id=2, architectures=[arch], **kw)


@pytest.fixture
def good(tmp_path, tok):
    n = len(tok)
    return {"policy": _save(tmp_path / "policy", _gpt2("GPT2LMHeadModel", n), tok, chat=True),
            "rm": _save(tmp_path / "rm", _gpt2("GPT2ForSequenceClassification", n, num_labels=1),
                        tok)}


def _cfg(policy, rm, **over):
    cfg = OmegaConf.create({"policy": OmegaConf.structured(PolicyConfig(path=policy)),
                            "reward_model": OmegaConf.structured(RewardModelConfig(name="rm", path=rm)),
                            "toy": OmegaConf.structured(ToyConfig())})
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def _refused(cfg, *patterns) -> str:
    with pytest.raises(ConfigError) as info:
        check_models(cfg)
    msg = str(info.value)
    for pattern in patterns:
        assert pattern in msg, msg
    assert "Traceback" not in msg
    return msg


def _short(msg: str, lines: int = 3) -> None:
    assert len(msg.splitlines()) <= lines, msg


def test_good_local_models_pass(good):
    check_models(_cfg(good["policy"], good["rm"], **{"policy.use_chat_template": True}))


def test_toy_paths_pass_without_building(monkeypatch):
    import red_cli.toy.build

    def no_build(*args, **kwargs):
        raise AssertionError("toy paths are valid as they are: nothing is built")

    monkeypatch.setattr(red_cli.toy.build, "resolve_toy_path", no_build)
    check_models(_cfg("toy:policy", "toy:rm_toy", **{"reward_model.tokenizer": "toy:tokenizer_rm"}))


def test_empty_folder_and_folder_without_config(tmp_path, good):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_config = tmp_path / "tok_only"
    no_config.mkdir()
    (no_config / "tokenizer.json").write_text("{}")
    msg = _refused(_cfg(str(empty), str(no_config)),
                   f"policy.path='{empty}': an empty folder; expected a folder saved with save_pretrained",
                   f"reward_model.path='{no_config}': a folder without config.json")
    _short(msg)
    msg = _refused(_cfg(good["policy"], good["rm"], **{"reward_model.tokenizer": str(empty)}),
                   f"reward_model.tokenizer='{empty}': an empty folder")
    _short(msg, 1)


def test_hub_id_while_offline(monkeypatch, good):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "nobody-red-tests/no-such-model"
    msg = _refused(_cfg(name, good["rm"]), f"policy.path='{name}': not a local folder and not in "
                   "the local hub cache (offline")
    _short(msg, 1)
    msg = _refused(_cfg(good["policy"], good["rm"], **{"policy.tokenizer": name}),
                   f"policy.tokenizer='{name}': not a local folder and not in the local hub cache")
    _short(msg, 1)


def test_chat_template_missing(good):
    msg = _refused(_cfg(good["policy"], good["rm"], **{"reward_model.use_chat_template": True}),
                   "reward_model.use_chat_template=true: the tokenizer of "
                   f"reward_model.path='{good['rm']}' has no chat template")
    _short(msg, 1)


def test_chat_template_missing_on_policy(tmp_path, tok, good):
    plain = _save(tmp_path / "plain", _gpt2("GPT2LMHeadModel", len(tok)), tok, chat=False)
    _refused(_cfg(plain, good["rm"], **{"policy.use_chat_template": True}),
             f"policy.use_chat_template=true: the tokenizer of policy.path='{plain}'")


def test_tokenizer_larger_than_embeddings(tmp_path, tok, good):
    small = _save(tmp_path / "small", _gpt2("GPT2LMHeadModel", len(tok) - 10))
    msg = _refused(_cfg(small, good["rm"], **{"policy.tokenizer": good["policy"]}),
                   f"policy.tokenizer='{good['policy']}': the tokenizer has {len(tok)} tokens",
                   f"policy.path='{small}' has {len(tok) - 10} embedding rows")
    _short(msg, 1)


def test_sequence_classifier_as_policy(tmp_path, tok, good):
    bert = _save(tmp_path / "bert", BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=16,
                                               architectures=["BertForSequenceClassification"]), tok)
    msg = _refused(_cfg(bert, good["rm"]), f"policy.path='{bert}': a sequence classifier "
                   "(BertForSequenceClassification); the policy must be a causal LM")
    _short(msg, 1)
    # No architectures recorded and no causal-LM class for its type either.
    distil = _save(tmp_path / "distil", DistilBertConfig(vocab_size=len(tok), dim=8, n_layers=1,
                                                         n_heads=2, hidden_dim=16), tok)
    _refused(_cfg(distil, good["rm"]), f"policy.path='{distil}': model_type 'distilbert' has no "
             "causal-LM class")


def test_causal_lm_as_reward_model(good):
    msg = _refused(_cfg(good["policy"], good["policy"]),
                   f"reward_model.path='{good['policy']}': a causal language model (GPT2LMHeadModel), "
                   "not a reward model (a sequence classifier with one output)")
    assert "label_weights" not in msg
    _short(msg, 1)


def test_multi_label_classifier_needs_label_weights(tmp_path, tok, good):
    two = _save(tmp_path / "two", _gpt2("GPT2ForSequenceClassification", len(tok), num_labels=2), tok)
    _refused(_cfg(good["policy"], two), "num_labels=1), this one has 2; set reward_model.label_weights")
    check_models(_cfg(good["policy"], two, **{"reward_model.label_weights": [-1.0, 1.0]}))
    _refused(_cfg(good["policy"], two, **{"reward_model.label_weights": [1.0]}),
             "reward_model.label_weights=[1.0]: the reward model has 2 labels")


def test_several_problems_are_listed_together(tmp_path, good):
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = _refused(_cfg(good["rm"], good["policy"], **{"policy.tokenizer": str(empty)}),
                   "policy.path=", "policy.tokenizer=", "reward_model.path=")
    assert msg.startswith("invalid config:\n  ") and len(msg.splitlines()) == 4


def test_loaders_raise_the_same_errors(tmp_path, monkeypatch, good):
    """`red eval` and the engines reach the loaders without check_models: same messages, before
    any weights are read (these folders have none)."""
    with pytest.raises(ConfigError, match="a sequence classifier"):
        load_policy(good["rm"])
    with pytest.raises(ConfigError, match="a causal language model") as info:
        load_reward_model(good["policy"], label_weights=[-1.0, 1.0])
    assert "label_weights" not in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"policy.tokenizer='{empty}': an empty folder"):
        load_tokenizer(str(empty), key="policy.tokenizer")
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_policy(str(tmp_path / "missing"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not in the local hub cache"):
        load_reward_model("nobody-red-tests/no-such-rm")
