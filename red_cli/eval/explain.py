"""`red explain`: where each redistribution mode puts the reward, token by token.

A handful of eval prompts are answered by the policy (one seeded batch); the SAME responses
are then scored by ONE reward model through the training pipeline
(``red_cli.reward.pipeline.RewardPipeline``) in one forward that reads what every mode
needs, with no score shaping, and each mode (``red_cli.modes``) spreads the same sequence
score r_C over the tokens, so the columns differ only in that:

- sparse: all of r_C on the last token;
- td: the reward model's own prefix-score differences (their sum is r_C - R(x) under
  ``first_token=prompt_baseline``, so R(x) is shown too);
- abc: beta * attention share * r_C, plus (1 - beta) * r_C on the last token;
- uniform: r_C / T everywhere.

Mode knobs are the run's own (``redistribution.<mode>``), else the modes' defaults. A run
with a cost model (``cost_model.path``: the safety task) has its cost model read the same
responses the same way, and each mode spreads the sequence cost c_C as it spreads r_C: every
sample then shows a second row, the per-token costs under each mode (with C(x), the prompt's
cost, and the toy world's gold cost on toy prompts).

Writes ``credit.html`` (self-contained: inline CSS, no scripts, a hover title per token with
its value), ``credit.png`` (the same page drawn by matplotlib) and ``credit.json`` (the
numbers). Colours: a diverging map, red negative, blue positive, white zero, scaled per sample
by the largest |reward| over its modes ("scale ±s"), so the columns of one sample compare
directly; costs have their own map (purple negative, orange positive: harmful) and scale.
The ink of each token is dark or white, whichever contrasts more with its cell by WCAG 2
relative luminance (dark on light cells, white on saturated ones). Both pages open with a
legend: r_C, R(x), Σ, the scale, and the token marks (and c_C, C(x), the gold cost and the
cost scale, with costs).

Tokens are labelled readably (:func:`token_label`): a token holding only some bytes of a
character (byte-level BPE splits emoji and accented letters) shows its bytes, "⟨0xF0 0x9F⟩",
and the token that completes the character shows the character; a token without text shows
"·"; newlines "⏎", tabs "⇥", a whitespace-only token "␣" per space, other invisible
characters "⟨U+200B⟩".
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger("red")

CMAP = "RdBu"
COST_CMAP = "PuOr_r"  # positive cost (harmful) orange, so a cost row never reads as a reward row


@dataclass
class Sample:
    """One response: its tokens, the reward model's reading (score r_C, prompt_score R(x),
    per-mode ``rewards``) and, with a cost model, the cost model's (cost c_C, prompt_cost C(x),
    per-mode ``costs``) and the gold cost (toy prompts)."""

    prompt: str
    response: str
    tokens: list[str]
    score: float
    gold: float | None
    prompt_score: float | None
    rewards: dict[str, list[float]]
    cost: float | None = None
    gold_cost: float | None = None
    prompt_cost: float | None = None
    costs: dict[str, list[float]] | None = None

    @property
    def scale(self) -> float:
        return _scale(self.rewards)

    @property
    def cost_scale(self) -> float:
        return _scale(self.costs or {})


def _scale(values: dict[str, list[float]]) -> float:
    """The largest |value| over all modes (the colour scale of one row)."""
    return max([abs(r) for rs in values.values() for r in rs] + [1e-12])


def mode_knobs(mode: str, run_cfg: DictConfig | None):
    """A mode's knobs as the run set them (``redistribution.<mode>``), else its defaults."""
    from red_cli.modes import get_mode

    if run_cfg is not None and mode in run_cfg.redistribution:
        return run_cfg.redistribution[mode]
    return OmegaConf.structured(get_mode(mode).knobs)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: byte -> the printable character that stands for it."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _is_byte_level(tokenizer) -> bool:
    if getattr(tokenizer, "byte_decoder", None):  # a slow GPT-2-style tokenizer
        return True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in str(backend.decoder)


def token_bytes(tokenizer, tid: int) -> bytes | None:
    """The raw bytes a token stands for, where the vocabulary says: SentencePiece byte
    fallback pieces (``<0xF0>``) and byte-level BPE pieces; else None."""
    piece = tokenizer.convert_ids_to_tokens(tid)
    if not isinstance(piece, str):
        return None
    if m := _BYTE_TOKEN.fullmatch(piece):
        return bytes([int(m.group(1), 16)])
    if _is_byte_level(tokenizer) and piece and all(c in BYTE_DECODER for c in piece):
        return bytes(BYTE_DECODER[c] for c in piece)
    return None


def byte_placeholder(raw: bytes) -> str:
    """Bytes that are not a whole character, readably: b"\\xf0\\x9f" -> "⟨0xF0 0x9F⟩"."""
    return "⟨" + " ".join(f"0x{b:02X}" for b in raw) + "⟩"


def bytes_label(raw: bytes) -> str:
    """Bytes as text: whole UTF-8 characters as themselves, each run of bytes that is not
    one as a placeholder: b"ok\\xe2." -> "ok⟨0xE2⟩."."""
    text = raw.decode("utf-8", errors="surrogateescape")
    return re.sub("[\udc80-\udcff]+",
                  lambda m: byte_placeholder(bytes(ord(c) - 0xDC00 for c in m.group())), text)


def piece_text(whole: str, raw: bytes | None, decoded: str) -> str:
    """A token that ends inside a character: the whole characters it holds (``whole``), then
    its remaining bytes as a placeholder; without its bytes, the decoded text with each
    U+FFFD as "⟨?⟩"."""
    if raw is not None:
        head = whole.encode()
        rest = raw[len(head):] if raw.startswith(head) else raw
        return (whole if raw.startswith(head) else "") + (byte_placeholder(rest) if rest else "")
    return decoded.replace("\ufffd", "⟨?⟩")


def token_texts(response: str, ids: list[int], tokenizer) -> list[str]:
    """The text of each response token (character spans from ``align``); specials by name.

    A token that ends inside a character (byte-level BPE splits "😀" into F0 9F | 98 80) shares
    that character's span with the next token: it shows the whole characters it holds and its
    other bytes as "⟨0xF0 0x9F⟩", and the token that completes the character shows it. A
    token without characters of its own shows its bytes the same way (its decoded piece when
    the vocabulary does not tell its bytes), and so do bytes that are no character at all
    (U+FFFD in the decoded response); specials show in brackets.
    """
    from red_cli.reward.align import policy_token_spans

    spans = policy_token_spans(response, ids, tokenizer)
    special = set(tokenizer.all_special_ids)
    out = []
    for k, (tid, (s, e)) in enumerate(zip(ids, spans)):
        nxt = spans[k + 1][0] if k + 1 < len(spans) and ids[k + 1] not in special else None
        if e > s and (nxt is None or nxt >= e):
            text = response[s:e]
            if "\ufffd" in text and (raw := token_bytes(tokenizer, tid)) is not None:
                text = bytes_label(raw)  # the response holds bytes that are no character
            out.append(text)
        elif tid in special:
            out.append(f"[{tokenizer.convert_ids_to_tokens(tid)}]")
        else:
            whole = response[s:nxt] if e > s and nxt is not None and nxt > s else ""
            out.append(piece_text(whole, token_bytes(tokenizer, tid), tokenizer.decode([tid])))
    return out


class Reading(NamedTuple):
    """One model's reading of a rollout: sequence scores [b], prompt scores [b] (modes that
    need prefix scores) or None, and each mode's per-token credit [b, T]."""

    scores: list[float]
    prompt_scores: list[float] | None
    credit: dict[str, Tensor]


def read_credit(stack, rollout, policy_tokenizer, eos_ids: tuple[int, ...], modes: list,
                run_cfg: DictConfig | None, users: str) -> Reading:
    """One forward of a reward (or cost) model over the rollout, reading what ``modes`` need,
    unshaped; then each mode's credit with the run's knobs."""
    from red_cli.reward.pipeline import RewardPipeline
    from red_cli.reward.shaping import ScoreShaper

    needs = frozenset().union(*(m.needs for m in modes))
    pipeline = RewardPipeline(stack, policy_tokenizer, needs, users=users, eos_ids=eos_ids)
    scored = pipeline(rollout, ScoreShaper("none", None, None), 1)
    prompt = scored.signals.prompt_scores
    return Reading(scored.raw_scores.tolist(), None if prompt is None else prompt.tolist(),
                   {m.name: m.apply(scored.signals, mode_knobs(m.name, run_cfg)).rewards
                    for m in modes})


def compute(cfg: DictConfig) -> tuple[list[Sample], dict]:
    """Sample, score once (and cost once, with a cost model), credit per mode; return the
    samples and a description of the setup."""
    from red_cli import models, runtime
    from red_cli.eval import sides
    from red_cli.eval.cost import run_cost_model
    from red_cli.eval.judges import load_rm_preset
    from red_cli.modes import get_mode
    from red_cli.reward.stack import load_reward_stack
    from red_cli.toy import is_toy

    device = runtime.pick_device(cfg.device)
    sides.check_local_path(cfg.run, "run")
    spec, run = sides.candidate_spec(cfg.run, cfg.toy)
    toy = sides.toy_settings(run, cfg.toy)
    if cfg.reward_model is not None:
        rm_cfg = load_rm_preset(cfg.reward_model)
    elif run is not None:
        rm_cfg = run.cfg.reward_model
    else:
        rm_cfg = load_rm_preset("toy")
    prompt_cfg = sides.prompt_settings(cfg.prompts, run, cfg.n_samples)
    sampling = sides.sampling_settings(cfg.sampling, run)

    side = sides.load_side(spec, device, cfg.generation, sampling)
    texts = sides.read_prompts(prompt_cfg, toy)
    prompts = sides.usable_prompts(texts, side.tokenizer, cfg.n_samples,
                                   prompt_cfg["max_prompt_length"], spec.use_chat_template)
    rollout = sides.sample(side, prompts, sides.batch_seed(cfg.seed, 0), device)

    modes = [get_mode(m) for m in cfg.modes]
    run_cfg = run.cfg if run else None
    users = "red explain modes=" + ",".join(cfg.modes)
    eos_ids = models.eos_token_ids(side.tokenizer, side.model)
    reward = read_credit(load_reward_stack(rm_cfg, toy, device), rollout, side.tokenizer,
                         eos_ids, modes, run_cfg, users)
    cost_cfg = run_cost_model(run)
    cost = None
    if cost_cfg is not None:
        cost = read_credit(load_reward_stack(cost_cfg, toy, device, key="cost_model.path"),
                           rollout, side.tokenizer, eos_ids, modes, run_cfg,
                           users + " (cost model)")
    texts = [p + r for p, r in zip(rollout.prompts, rollout.responses)]
    gold = gold_cost = None
    if is_toy(prompt_cfg["path"]):
        from red_cli.toy.judge import gold_scores

        gold = gold_scores(texts)
        if cost is not None:
            from red_cli.toy.cost import gold_costs

            gold_cost = gold_costs(texts)

    def pick(values: list[float] | None, i: int) -> float | None:
        return None if values is None else values[i]

    samples = []
    for i in range(len(prompts)):
        real = rollout.response_mask[i]
        ids = rollout.response_ids[i][real].tolist()
        costs = {} if cost is None else {
            "cost": cost.scores[i], "gold_cost": pick(gold_cost, i),
            "prompt_cost": pick(cost.prompt_scores, i),
            "costs": {m: c[i][real].tolist() for m, c in cost.credit.items()}}
        samples.append(Sample(
            prompt=rollout.prompts[i], response=rollout.responses[i],
            tokens=token_texts(rollout.responses[i], ids, side.tokenizer),
            score=reward.scores[i], gold=pick(gold, i),
            prompt_score=pick(reward.prompt_scores, i),
            rewards={m: c[i][real].tolist() for m, c in reward.credit.items()}, **costs,
        ))
    setup = {"policy": spec.path, "reward_model": rm_cfg.path,
             "cost_model": None if cost_cfg is None else cost_cfg.path,
             "prompts": prompt_cfg["path"], "seed": int(cfg.seed),
             "sampling": dataclasses.asdict(sampling),
             "modes": {m: OmegaConf.to_container(mode_knobs(m, run_cfg)) for m in cfg.modes}}
    return samples, setup


# --------------------------------------------------------------------------- colours


def _rgb(value: float, scale: float, cmap: str = CMAP) -> tuple[float, float, float]:
    import matplotlib

    x = 0.5 + 0.5 * max(-1.0, min(1.0, value / scale))
    r, g, b, _ = matplotlib.colormaps[cmap](x)
    return r, g, b


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


DARK_INK, LIGHT_INK = "#111111", "#ffffff"


def relative_luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (components in 0..1)."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _hex_rgb(color: str) -> tuple[float, float, float]:
    return tuple(int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def ink_for(background: tuple[float, float, float]) -> str:
    """Dark or white ink, whichever has the higher WCAG contrast ratio with ``background``
    (dark on cells lighter than relative luminance ~0.19, white on darker ones)."""
    dark = contrast_ratio(background, _hex_rgb(DARK_INK))
    light = contrast_ratio(background, _hex_rgb(LIGHT_INK))
    return DARK_INK if dark >= light else LIGHT_INK


def _ink(value: float, scale: float, cmap: str = CMAP) -> str:
    return ink_for(_rgb(value, scale, cmap))


_WHITESPACE_MARKS = {" ": "␣", "\n": "⏎", "\t": "⇥"}


def _visible(ch: str) -> str:
    if ch == "\n":
        return "⏎"
    if ch == "\t":
        return "⇥"
    if ch == "\ufffd":
        return "⟨?⟩"
    if ch != " " and (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")):
        return f"⟨U+{ord(ch):04X}⟩"
    return ch


def token_label(token: str) -> str:
    """How a token's text is drawn: "·" for no text; a whitespace-only token as "␣" per space
    (and "⏎" / "⇥"); elsewhere newlines "⏎", tabs "⇥", U+FFFD "⟨?⟩", other invisible
    characters "⟨U+XXXX⟩", and a leading run of two or more spaces as "␣"s (one leading space
    reads as the gap between words and stays a space)."""
    if token == "":
        return "·"
    if token.isspace():
        return "".join(_WHITESPACE_MARKS.get(c) or _visible(c) for c in token)
    lead = len(token) - len(token.lstrip(" "))
    head = "␣" * lead if lead >= 2 else " " * lead
    return head + "".join(_visible(c) for c in token[lead:])


# --------------------------------------------------------------------------- html


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #111; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #555; font-size: 13px; margin: 2px 0; }
.legend { display: inline-block; width: 240px; height: 12px; vertical-align: middle;
          border: 1px solid #999; background: linear-gradient(to right, LEGEND); }
.legend.cost { background: linear-gradient(to right, COST_GRADIENT); }
section { border-top: 1px solid #ddd; padding: 10px 0; }
h2 { font-size: 14px; margin: 0 0 6px; font-weight: 600; }
h2 .num { color: #555; font-weight: 400; }
.grid { display: grid; grid-template-columns: repeat(COLS, 1fr); gap: 14px; }
h3 { font-size: 13px; margin: 0 0 4px; }
h3 small { color: #555; font-weight: 400; }
.text { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
        line-height: 1.9; white-space: pre-wrap; word-break: break-word; margin: 0; }
.prompt { color: #777; }
.tok { border-radius: 2px; }
.key { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; font-size: 13px;
       color: #333; background: #f6f6f6; border: 1px solid #ddd; border-radius: 4px;
       padding: 8px 12px; margin: 10px 0 14px; max-width: 1100px; }
.key dt { font-weight: 600; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.key dd { margin: 0; }
"""

# The legend both pages open with: (term, what it means).
LEGEND = (
    ("r_C", "the reward model's score of the whole sequence (prompt + response), the "
            "reward every mode spreads over the response tokens"),
    ("R(x)", "the reward model's score of the prompt alone: td's baseline for the first "
             "response token under first_token=prompt_baseline, so td's Σ = r_C − R(x)"),
    ("gold", "the gold judge's score of the response (toy prompts only; never seen in "
             "training)"),
    ("Σ", "the sum of a mode's per-token rewards"),
    ("scale ±s", "the colour scale: the largest |reward| of this sample over all modes; "
                 "red −s, white 0, blue +s, so a sample's columns compare directly"),
    ("tokens", "grey = the prompt; ⟨0xF0 0x9F⟩ = bytes of a character split across tokens "
               "(the token that completes it shows the character); · = a token with no "
               "text; ␣ = a space-only token; ⏎ newline; ⇥ tab"),
)
# Appended to LEGEND when the run has a cost model.
COST_LEGEND = (
    ("c_C", "the cost model's score of the whole sequence (higher: more harmful), spread "
            "over the response tokens by each mode as r_C is (the rows marked cost)"),
    ("C(x)", "the cost model's score of the prompt alone: td's baseline for the costs, as "
             "R(x) is for the rewards"),
    ("gold cost", "the toy world's gold cost of prompt + response: its hype words (toy "
                  "prompts only; never seen in training)"),
    ("cost ±c", "the colour scale of the cost rows: the largest |cost| of this sample over "
                "all modes; purple −c, white 0, orange +c"),
)


def _legend(samples: list[Sample]) -> tuple[tuple[str, str], ...]:
    return LEGEND + (COST_LEGEND if any(s.costs for s in samples) else ())


def _head(s: Sample) -> tuple[str, str | None]:
    """A sample's numbers: the reward model's (r_C, gold, R(x)) and the cost model's (c_C,
    gold cost, C(x)), each with its colour scale; the second is None without costs."""
    head = f"r_C = {s.score:+.3f}"
    if s.gold is not None:
        head += f" · gold = {s.gold:+.3f}"
    if s.prompt_score is not None:
        head += f" · R(x) = {s.prompt_score:+.3f}"
    head += f" · scale ±{s.scale:.3g}"
    if not s.costs:
        return head, None
    cost = f"c_C = {s.cost:+.3f}"
    if s.gold_cost is not None:
        cost += f" · gold cost = {s.gold_cost:g}"
    if s.prompt_cost is not None:
        cost += f" · C(x) = {s.prompt_cost:+.3f}"
    return head, cost + f" · cost ±{s.cost_scale:.3g}"


def _rows(s: Sample) -> list[tuple[str, dict[str, list[float]], float, str]]:
    """The coloured rows of a sample: (column title suffix, values per mode, scale, colour map)."""
    rows = [("", s.rewards, s.scale, CMAP)]
    if s.costs:
        rows.append((" · cost", s.costs, s.cost_scale, COST_CMAP))
    return rows


def _gradient(cmap: str) -> str:
    return ", ".join(_hex(_rgb(v, 1.0, cmap)) for v in (-1.0, -0.5, 0.0, 0.5, 1.0))


def render_html(samples: list[Sample], setup: dict, modes: list[str]) -> str:
    css = (_CSS.replace("COST_GRADIENT", _gradient(COST_CMAP))
           .replace("LEGEND", _gradient(CMAP)).replace("COLS", str(len(modes))))
    e = html.escape
    with_costs = any(s.costs for s in samples)
    cost_model = f' · cost model: {e(str(setup.get("cost_model")))}' if with_costs else ""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>red explain: per-token credit</title>", f"<style>{css}</style>", "</head>",
        "<body>", "<h1>Per-token credit by redistribution mode</h1>",
        f'<p class="meta">policy: {e(setup["policy"])} · reward model: '
        f'{e(str(setup["reward_model"]))}{cost_model} · prompts: {e(str(setup["prompts"]))} · '
        f'seed {setup["seed"]}</p>',
        '<p class="meta">colour: reward of each response token, −s <span class="legend">'
        "</span> +s (s: the sample's scale); hover a token for its exact value.</p>",
    ]
    if with_costs:
        parts.append('<p class="meta">cost rows: cost of each response token, −c <span '
                     'class="legend cost"></span> +c (c: the sample\'s cost scale).</p>')
    parts += ['<dl class="key">',
              *(f"<dt>{e(term)}</dt><dd>{e(text)}</dd>" for term, text in _legend(samples)),
              "</dl>"]
    for n, s in enumerate(samples, 1):
        head = " | ".join(h for h in _head(s) if h is not None)
        parts += ["<section>", f'<h2>#{n} <span class="num">{e(head)}</span></h2>',
                  '<div class="grid">']
        for suffix, values, scale, cmap in _rows(s):
            for mode in modes:
                spans = "".join(
                    f'<span class="tok" style="background:{_hex(_rgb(v, scale, cmap))};'
                    f'color:{_ink(v, scale, cmap)}" title="{e(repr(tok))}: {v:+.4f}">'
                    f"{e(token_label(tok))}</span>"
                    for tok, v in zip(s.tokens, values[mode]))
                total = sum(values[mode])
                parts += ['<div class="col">',
                          f"<h3>{e(mode + suffix)} <small>Σ = {total:+.3f}</small></h3>",
                          f'<p class="text"><span class="prompt">{e(s.prompt)}</span>{spans}</p>',
                          "</div>"]
        parts += ["</div>", "</section>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- png


def _font_chars(family: str) -> set[int]:
    from matplotlib import font_manager, ft2font

    return set(ft2font.FT2Font(font_manager.findfont(family)).get_charmap())


def png_label(token: str, chars: set[int]) -> str:
    """:func:`token_label`, with characters the PNG's font lacks (emoji) as "⟨U+1F600⟩"."""
    return "".join(c if ord(c) in chars else f"⟨U+{ord(c):04X}⟩" for c in token_label(token))


def render_png(samples: list[Sample], setup: dict, modes: list[str], path: Path) -> None:
    """The page as a picture: monospace text flowed into one column per mode (a second block
    of the same columns for the costs, with a cost model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    font, width = 9.0, 18.0  # points, inches
    char_w = 0.602 * font / 72  # DejaVu Sans Mono advance, inches
    line_h = 1.55 * font / 72
    margin, gap = 0.3, 0.25
    col_w = (width - 2 * margin - gap * (len(modes) - 1)) / len(modes)
    per_line = max(8, int(col_w / char_w))

    mono = _font_chars("DejaVu Sans Mono")

    def flow(prompt: str, tokens: list[str]) -> list[tuple[int, int, str, bool]]:
        """(line, column, text, is_token) of the prompt's words and each token's label,
        wrapping at ``per_line`` characters."""
        words = re.findall(r"\S+\s*|\s+", prompt.replace("\n", "⏎ "))
        pieces = [(w, False) for w in words] + [(png_label(t, mono), True) for t in tokens]
        out, line, col = [], 0, 0
        for text, is_token in pieces:
            if col + len(text) > per_line and col > 0:
                line, col = line + 1, 0
                text = text.lstrip(" ") or text
            out.append((line, col, text, is_token))
            col += len(text)
        return out

    layouts = [flow(s.prompt, s.tokens) for s in samples]
    legend = _legend(samples)
    with_costs = any(s.costs for s in samples)
    # The colour scales: rewards, and costs when the samples have them.
    bars = [("colour", "reward of each response token, from −s to +s:", CMAP, "s")]
    if with_costs:
        bars.append(("cost", "cost of each response token (cost rows), from −c to +c:",
                     COST_CMAP, "c"))
    row, bar_step = 0.19, 0.3  # inches per legend row; between colour bars (and tick labels)
    header_h = 0.75
    legend_h = 0.25 + row * (len(legend) + 1) + bar_step * (len(bars) - 1)
    height = (header_h + legend_h + 0.15 + margin
              + sum((1.2 + len(_rows(s)) * (lay[-1][0] + 1 + 1.4)) * line_h
                    for s, lay in zip(samples, layouts)))
    fig = plt.figure(figsize=(width, height))

    def fx(x: float) -> float:
        return x / width

    def fy(y: float) -> float:  # y in inches from the top
        return 1 - y / height

    fig.text(fx(margin), fy(0.3), "Per-token credit by redistribution mode", fontsize=14,
             weight="bold", va="center")
    policy = setup["policy"] if len(setup["policy"]) <= 110 else "…" + setup["policy"][-109:]
    read_by = f"reward model: {setup['reward_model']}"
    if with_costs:
        read_by += f"   cost model: {setup.get('cost_model')}"
    fig.text(fx(margin), fy(0.58), f"policy: {policy}   {read_by}", fontsize=8.5, color="#444",
             va="center")
    # The legend box: the colour scales, then one row per legend term.
    fig.patches.append(Rectangle((fx(margin - 0.08), fy(header_h + legend_h - 0.05)),
                                 fx(width - 2 * margin + 0.16), (legend_h - 0.1) / height,
                                 transform=fig.transFigure, facecolor="#f6f6f6",
                                 edgecolor="#dddddd", zorder=-1))
    y0 = header_h + 0.05 + row / 2
    for k, (term, text, cmap, unit) in enumerate(bars):
        yk = y0 + k * bar_step
        fig.text(fx(margin), fy(yk), term, fontsize=8.5, weight="bold", va="center",
                 family="DejaVu Sans Mono")
        fig.text(fx(margin + 0.95), fy(yk), text, fontsize=8.5, color="#333", va="center")
        cax = fig.add_axes((fx(margin + 4.3), fy(yk + 0.05), fx(3.0), 0.1 / height))
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1, 1),
                                                 cmap=cmap),
                           cax=cax, orientation="horizontal", ticks=[-1, 0, 1])
        bar.ax.set_xticklabels([f"−{unit}", "0", f"+{unit}"])
        bar.ax.tick_params(labelsize=7, length=2, pad=1)
    y_terms = y0 + bar_step * (len(bars) - 1) + 0.08
    for k, (term, text) in enumerate(legend, 1):
        yk = y_terms + k * row
        fig.text(fx(margin), fy(yk), term, fontsize=8.5, weight="bold", va="center",
                 family="DejaVu Sans Mono")
        fig.text(fx(margin + 0.95), fy(yk), text, fontsize=8.5, color="#333", va="center")

    y = header_h + legend_h + 0.15
    for n, (s, placed) in enumerate(zip(samples, layouts), 1):
        n_lines = placed[-1][0] + 1
        head = "   |   ".join(h for h in _head(s) if h is not None)
        fig.text(fx(margin), fy(y), f"#{n}   {head}", fontsize=9.5, weight="bold", va="center")
        y += line_h * 1.2
        for suffix, values_of, scale, cmap in _rows(s):
            for c, mode in enumerate(modes):
                x0 = margin + c * (col_w + gap)
                fig.text(fx(x0), fy(y), f"{mode}{suffix}   Σ = {sum(values_of[mode]):+.3f}",
                         fontsize=9, color="#333", va="center", style="italic")
                values = iter(values_of[mode])
                for line, col, text, is_token in placed:
                    xl, yl = x0 + col * char_w, y + (line + 1) * line_h
                    ink = "#888888"
                    if is_token:
                        value = next(values)
                        fig.patches.append(Rectangle(
                            (fx(xl), fy(yl + line_h * 0.45)), fx(len(text) * char_w),
                            line_h * 0.9 / height, transform=fig.transFigure,
                            facecolor=_rgb(value, scale, cmap), edgecolor="none", zorder=0))
                        ink = _ink(value, scale, cmap)
                    fig.text(fx(xl), fy(yl), text, fontsize=font, family="DejaVu Sans Mono",
                             color=ink, va="center", ha="left", zorder=1)
            y += (n_lines + 1.4) * line_h
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the verb


def output_dir(cfg: DictConfig) -> Path:
    from red_cli.eval.sides import slug
    from red_cli.runs import load_run

    if cfg.output_dir:
        return Path(cfg.output_dir)
    run = load_run(cfg.run)
    if run is not None:
        return run.dir / "explain"
    return Path("outputs") / "explain" / slug(Path(cfg.run).name or cfg.run)


def run_explain(cfg: DictConfig) -> Path:
    samples, setup = compute(cfg)
    modes = list(cfg.modes)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "credit.json").write_text(json.dumps(
        {"setup": setup, "samples": [s.__dict__ for s in samples]}, indent=1) + "\n")
    (out / "credit.html").write_text(render_html(samples, setup, modes))
    render_png(samples, setup, modes, out / "credit.png")
    log.info("explain: %d samples x %d modes -> %s/credit.html, credit.png", len(samples),
             len(modes), out)
    print(f"{out / 'credit.html'}\n{out / 'credit.png'}")
    return out
