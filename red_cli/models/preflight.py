"""Start-up checks of the models and tokenizers a train config names, before any engine exists.

:func:`check_models` reads configs (``AutoConfig``) and tokenizers only, never weights, so it
takes about a second, and raises one :class:`ConfigError` listing every problem it finds:

- a missing path, a file, an empty folder, or a folder without config.json (tokenizers: without
  tokenizer files) given as ``policy.path`` / ``reward_model.path`` / ``*.tokenizer``;
- a hub id that is neither a local folder nor in the local hub cache while offline
  (``HF_HUB_OFFLINE=1``, or the hub unreachable);
- ``*.use_chat_template=true`` on a tokenizer without a chat template; a tokenizer without EOS;
- a tokenizer with more tokens (``len(tokenizer)``) than the model has embedding rows
  (config ``vocab_size``);
- a sequence classifier as the policy, a causal LM as the reward model, and a reward model
  whose number of labels does not fit ``reward_model.label_weights``.

``toy:*`` paths are the embedded task's own models and always valid (they are resolved, and so
built, only when paired with a tokenizer or model that is not ``toy:*``). The loaders in
``models.loading`` use the same helpers, so a model reached another way (``red eval``) fails
with the same messages.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any

from red_cli.config.checks import looks_local
from red_cli.errors import ConfigError
from red_cli.toy import is_toy, resolve_path

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
NOT_CAUSAL_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification", "ForMaskedLM",
                       "ForQuestionAnswering")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def is_offline() -> bool:
    """HF_HUB_OFFLINE set now, or when huggingface_hub was imported."""
    import huggingface_hub.constants as hub

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return env in ("1", "on", "yes", "true") or bool(hub.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens (assumed so behind a proxy): without
    this, a hub id missing from the cache costs ~25 s of huggingface_hub retries offline."""
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _is_local(path: str) -> bool:
    return looks_local(path) or Path(path).expanduser().exists()


def folder_problem(path: str, key: str, tokenizer: bool = False) -> str | None:
    """What is wrong with a local path given as a model (or tokenizer) folder; None if fine."""
    folder = Path(path).expanduser()
    if not folder.exists():
        return f"{key}={path!r}: no such file or directory"
    saved = "a folder saved with save_pretrained"
    if not folder.is_dir():
        return f"{key}={path!r}: a file, not {saved}"
    names = {p.name for p in folder.iterdir()}
    if not names:
        return f"{key}={path!r}: an empty folder; expected {saved}"
    if tokenizer:
        if not names & set(TOKENIZER_FILES):
            role = key.split(".")[0]
            return (f"{key}={path!r}: a folder without tokenizer files (tokenizer.json / "
                    f"tokenizer_config.json); set {role}.tokenizer to the model's tokenizer")
    elif "config.json" not in names:
        return f"{key}={path!r}: a folder without config.json; expected a model {saved}"
    return None


def _from_hub(load, path: str, key: str, cache_first: bool = True, **kwargs):
    """``load(path)`` for a hub id: from the local cache first, then (online) from the hub.
    ``cache_first=False`` asks the hub first when online, as transformers does (it falls back
    on the cache itself)."""
    offline = is_offline()
    if cache_first or offline:
        try:
            return load(path, local_files_only=True, **kwargs)
        except OSError:
            if offline:
                raise ConfigError(f"{key}={path!r}: not a local folder and not in the local hub "
                                  "cache (offline: HF_HUB_OFFLINE=1); download it once online, or "
                                  "give a local folder") from None
            if not hub_reachable():
                raise ConfigError(f"{key}={path!r}: not a local folder and not in the local hub "
                                  "cache (offline: the hub is unreachable); give a local folder"
                                  ) from None
    try:
        return load(path, **kwargs)
    except OSError as err:
        text = _first_line(err)
        if "connect" in text.lower() or "offline" in text.lower():
            raise ConfigError(f"{key}={path!r}: not a local folder and not in the local hub cache "
                              "(offline: the hub is unreachable); give a local folder") from None
        raise ConfigError(f"{key}={path!r}: {text}") from None


def model_config(path: str, key: str, trust_remote_code: bool = False):
    """The transformers config of a local folder or hub id (no weights), or a ConfigError."""
    from transformers import AutoConfig

    try:
        if _is_local(path):
            problem = folder_problem(path, key)
            if problem:
                raise ConfigError(problem)
            return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        return _from_hub(AutoConfig.from_pretrained, path, key,
                         trust_remote_code=trust_remote_code)
    except ConfigError:
        raise
    except Exception as err:  # a corrupt config.json: JSONDecodeError, KeyError, ...
        if not _is_local(path):
            raise ConfigError(f"{key}={path!r}: {_first_line(err)}") from None
        raise ConfigError(f"{key}={path!r}: its config.json cannot be read ({_first_line(err)})"
                          ) from None


def tokenizer(path: str, key: str, trust_remote_code: bool = False, cache_first: bool = True):
    """The tokenizer of a local folder or hub id, or a ConfigError (``cache_first``: a hub id
    from the local cache when it is there, with no request to the hub)."""
    from transformers import AutoTokenizer

    try:
        if _is_local(path):
            problem = folder_problem(path, key, tokenizer=True)
            if problem:
                raise ConfigError(problem)
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        return _from_hub(AutoTokenizer.from_pretrained, path, key, cache_first,
                         trust_remote_code=trust_remote_code)
    except ConfigError:
        raise
    except Exception as err:  # corrupt tokenizer files raise KeyError, ValueError, OSError, ...
        raise ConfigError(f"{key}={path!r}: no tokenizer could be loaded from it "
                          f"({_first_line(err)})") from None


def role_problem(config, role: str, path: str, key: str | None = None,
                 label_weights: Any = None, score_head: str | None = None) -> str | None:
    """Whether ``config`` fits its role: ``policy`` (a causal LM) or ``reward_model`` (a
    sequence classifier with one output, or k outputs and k ``label_weights``; with
    ``score_head`` the checkpoint's own one-output layer, whatever its config's num_labels).
    A cost model is checked as a ``reward_model``, under its own keys."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    )

    key = key or f"{role}.path"
    archs = list(getattr(config, "architectures", None) or [])
    auto_map = getattr(config, "auto_map", None) or {}
    model_type = getattr(config, "model_type", "?")
    if role == "policy":
        other = next((a for a in archs if a.endswith(NOT_CAUSAL_SUFFIXES)), None)
        if other and other.endswith("ForSequenceClassification"):
            return (f"{key}={path!r}: a sequence classifier ({other}); the policy must be a "
                    "causal LM (*ForCausalLM)")
        if other and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
            return f"{key}={path!r}: a {other}, not a causal LM; the policy must be a causal LM"
        if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and "AutoModelForCausalLM" not in auto_map:
            return (f"{key}={path!r}: model_type {model_type!r} has no causal-LM class "
                    "(AutoModelForCausalLM cannot load it); the policy must be a causal LM")
        return None
    causal = next((a for a in archs if a.endswith(CAUSAL_SUFFIXES)), None)
    if causal:
        return (f"{key}={path!r}: a causal language model ({causal}), not a reward model (a "
                "sequence classifier with one output); use a *ForSequenceClassification "
                "checkpoint trained as a reward model")
    if (type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
            and "AutoModelForSequenceClassification" not in auto_map):
        return (f"{key}={path!r}: model_type {model_type!r} has no sequence-classification class; "
                "a reward model is a sequence classifier with one output")
    labels = 1 if score_head else config.num_labels
    group = (key or "reward_model.path").rsplit(".", 1)[0]
    if label_weights is None and labels != 1:
        return (f"{key}={path!r}: a reward model needs one scalar output (num_labels=1), "
                f"this one has {labels}; set {group}.label_weights "
                f"(one weight per label, score = sum_k w_k * logit_k) to combine them")
    if label_weights is not None and len(label_weights) != labels:
        return (f"{group}.label_weights={list(label_weights)}: the {group.replace('_', ' ')} has {labels} "
                f"labels, so it needs {labels} weights (one per label, in label order); got "
                f"{len(label_weights)}")
    return None


def vocab_rows(config) -> int | None:
    """Rows of the model's input embedding as its config states them (``vocab_size``)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rows = getattr(text, "vocab_size", None)
    return rows if isinstance(rows, int) else None


def _check_role(role: str, node: Any, toy_cfg: Any) -> list[str]:
    kind = "policy" if role == "policy" else "reward_model"
    path = str(node.path)
    tok_path = str(node.get("tokenizer") or path)
    if is_toy(path) and is_toy(tok_path):
        return []  # the embedded task's own models
    tok_key = f"{role}.tokenizer" if node.get("tokenizer") else f"{role}.path"
    trc = bool(node.get("trust_remote_code", False))
    problems: list[str] = []
    config = tok = None
    try:
        config = model_config(resolve_path(path, toy_cfg), f"{role}.path", trc)
    except ConfigError as err:
        problems.append(str(err))
        if tok_key == f"{role}.path":
            return problems  # the same folder: its tokenizer would only repeat the problem
    if config is not None:
        problem = role_problem(config, kind, path, f"{role}.path",
                               label_weights=node.get("label_weights"),
                               score_head=node.get("score_head"))
        if problem:
            problems.append(problem)
            config = None
    try:
        tok = tokenizer(resolve_path(tok_path, toy_cfg), tok_key, trc)
    except ConfigError as err:
        problems.append(str(err))
        return problems
    where = f"{tok_key}={tok_path!r}"
    if tok.eos_token_id is None:
        problems.append(f"{where}: the tokenizer has no EOS token; responses could never end")
    if node.get("use_chat_template") and not getattr(tok, "chat_template", None):
        problems.append(f"{role}.use_chat_template=true: the tokenizer of {where} has no chat "
                        f"template; set {role}.use_chat_template=false or use a tokenizer with "
                        "one (an instruct/chat model's)")
    rows = vocab_rows(config) if config is not None else None
    if rows is not None and len(tok) > rows:
        problems.append(f"{where}: the tokenizer has {len(tok)} tokens (len(tokenizer)) but the "
                        f"model {role}.path={path!r} has {rows} embedding rows (vocab_size); ids "
                        f">= {rows} would index past them: use the model's own tokenizer")
    return problems


def check_models(cfg: Any) -> None:
    """Raise one :class:`ConfigError` listing every problem of the policy and reward model of a
    composed train config (see the module doc); reads no weights."""
    toy_cfg = cfg.get("toy")
    problems: list[str] = []
    for role in ("policy", "reward_model", "cost_model"):
        node = cfg.get(role)
        if node is not None and node.get("path"):
            problems += _check_role(role, node, toy_cfg)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
