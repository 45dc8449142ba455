"""`red explain`: where each redistribution mode puts the reward, token by token.

A handful of eval prompts are answered by the policy (one seeded batch); the SAME responses
are then scored by ONE reward model through the training pipeline
(``red_cli.reward.pipeline.RewardPipeline``) in one forward that reads what every mode
needs, with no score shaping, and each mode (``red_cli.modes``) spreads the same sequence
score r_C over the tokens, so the columns differ only in that (PAPERS.md):

- sparse: all of r_C on the last token;
- td: the reward model's own prefix-score differences (their sum is r_C - R(x) under
  ``first_token=prompt_baseline``, so R(x) is shown too);
- abc: beta * attention share * r_C, plus (1 - beta) * r_C on the last token;
- uniform: r_C / T everywhere.

Mode knobs are the run's own (``redistribution.<mode>``), else the modes' defaults. Writes
``credit.html`` (self-contained: inline CSS, no scripts, a hover title per token with its
value), ``credit.png`` (the same page drawn by matplotlib) and ``credit.json`` (the numbers).
Colours: a diverging map, red negative, blue positive, white zero, scaled per sample by the
largest |reward| over its modes, so the columns of one sample compare directly.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("red")

CMAP = "RdBu"


@dataclass
class Sample:
    prompt: str
    response: str
    tokens: list[str]
    score: float
    gold: float | None
    prompt_score: float | None
    rewards: dict[str, list[float]]

    @property
    def scale(self) -> float:
        return max([abs(r) for rs in self.rewards.values() for r in rs] + [1e-12])


def mode_knobs(mode: str, run_cfg: DictConfig | None):
    """A mode's knobs as the run set them (``redistribution.<mode>``), else its defaults."""
    from red_cli.modes import get_mode

    if run_cfg is not None and mode in run_cfg.redistribution:
        return run_cfg.redistribution[mode]
    return OmegaConf.structured(get_mode(mode).knobs)


def token_texts(response: str, ids: list[int], tokenizer) -> list[str]:
    """The text of each response token (character spans from ``align``); specials by name.

    A token without characters of its own (a special token, or a byte piece of a character
    another token completes) shows as its decoded piece, specials in brackets.
    """
    from red_cli.reward.align import policy_token_spans

    spans = policy_token_spans(response, ids, tokenizer)
    special = set(tokenizer.all_special_ids)
    out = []
    for tid, (s, e) in zip(ids, spans):
        if e > s:
            out.append(response[s:e])
        elif tid in special:
            out.append(f"[{tokenizer.convert_ids_to_tokens(tid)}]")
        else:
            out.append(tokenizer.decode([tid]))
    return out


def compute(cfg: DictConfig) -> tuple[list[Sample], dict]:
    """Sample, score once, credit per mode; return the samples and a description of the setup."""
    from red_cli import runtime
    from red_cli.eval import sides
    from red_cli.eval.judges import load_rm_preset
    from red_cli.modes import get_mode
    from red_cli.reward.pipeline import RewardPipeline
    from red_cli.reward.shaping import ScoreShaper
    from red_cli.reward.stack import load_reward_stack
    from red_cli.toy import is_toy

    device = runtime.pick_device(cfg.device)
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
    rm = load_reward_stack(rm_cfg, toy, device)
    needs = frozenset().union(*(m.needs for m in modes))
    pipeline = RewardPipeline(rm, side.tokenizer, needs,
                              users="red explain modes=" + ",".join(cfg.modes))
    scored = pipeline(rollout, ScoreShaper("none", None, None), 1)
    run_cfg = run.cfg if run else None
    per_mode = {m.name: m.apply(scored.signals, mode_knobs(m.name, run_cfg)) for m in modes}
    prompt_scores = (scored.signals.prompt_scores.tolist()
                     if scored.signals.prompt_scores is not None else None)
    raw = scored.raw_scores.tolist()
    gold = None
    if is_toy(prompt_cfg["path"]):
        from red_cli.toy.judge import gold_scores

        gold = gold_scores([p + r for p, r in zip(rollout.prompts, rollout.responses)])

    samples = []
    for i in range(len(prompts)):
        real = rollout.response_mask[i]
        ids = rollout.response_ids[i][real].tolist()
        samples.append(Sample(
            prompt=rollout.prompts[i], response=rollout.responses[i],
            tokens=token_texts(rollout.responses[i], ids, side.tokenizer), score=raw[i],
            gold=None if gold is None else gold[i],
            prompt_score=None if prompt_scores is None else prompt_scores[i],
            rewards={m: c.rewards[i][real].tolist() for m, c in per_mode.items()},
        ))
    setup = {"policy": spec.path, "reward_model": rm_cfg.path, "prompts": prompt_cfg["path"],
             "seed": int(cfg.seed), "sampling": dataclasses.asdict(sampling),
             "modes": {m: OmegaConf.to_container(mode_knobs(m, run_cfg)) for m in cfg.modes}}
    return samples, setup


# --------------------------------------------------------------------------- colours


def _rgb(value: float, scale: float) -> tuple[float, float, float]:
    import matplotlib

    x = 0.5 + 0.5 * max(-1.0, min(1.0, value / scale))
    r, g, b, _ = matplotlib.colormaps[CMAP](x)
    return r, g, b


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def _ink(value: float, scale: float) -> str:
    return "#ffffff" if abs(value) / scale > 0.6 else "#111111"


def _display(token: str) -> str:
    return token.replace("\n", "⏎").replace("\t", " ")


# --------------------------------------------------------------------------- html


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #111; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #555; font-size: 13px; margin: 2px 0; }
.legend { display: inline-block; width: 240px; height: 12px; vertical-align: middle;
          border: 1px solid #999; background: linear-gradient(to right, LEGEND); }
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
"""


def render_html(samples: list[Sample], setup: dict, modes: list[str]) -> str:
    legend = ", ".join(_hex(_rgb(v, 1.0)) for v in (-1.0, -0.5, 0.0, 0.5, 1.0))
    css = _CSS.replace("LEGEND", legend).replace("COLS", str(len(modes)))
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>red explain: per-token credit</title>", f"<style>{css}</style>", "</head>",
        "<body>", "<h1>Per-token credit by redistribution mode</h1>",
        f'<p class="meta">policy: {e(setup["policy"])} · reward model: '
        f'{e(str(setup["reward_model"]))} · prompts: {e(str(setup["prompts"]))} · '
        f'seed {setup["seed"]}</p>',
        '<p class="meta">colour: reward of each response token, −max <span class="legend">'
        "</span> +max, where max = the largest |reward| of that sample over all modes; "
        "grey text is the prompt; hover a token for its value.</p>",
    ]
    for n, s in enumerate(samples, 1):
        head = f"r_C = {s.score:+.3f}"
        if s.gold is not None:
            head += f" · gold = {s.gold:+.3f}"
        if s.prompt_score is not None:
            head += f" · R(x) = {s.prompt_score:+.3f}"
        parts += ["<section>", f'<h2>#{n} <span class="num">{e(head)} · '
                  f"scale ±{s.scale:.3g}</span></h2>", '<div class="grid">']
        for mode in modes:
            rewards = s.rewards[mode]
            spans = "".join(
                f'<span class="tok" style="background:{_hex(_rgb(r, s.scale))};'
                f'color:{_ink(r, s.scale)}" title="{e(repr(tok))}: {r:+.4f}">{e(_display(tok))}</span>'
                for tok, r in zip(s.tokens, rewards))
            parts += ['<div class="col">',
                      f"<h3>{e(mode)} <small>Σ = {sum(rewards):+.3f}</small></h3>",
                      f'<p class="text"><span class="prompt">{e(s.prompt)}</span>{spans}</p>',
                      "</div>"]
        parts += ["</div>", "</section>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- png


def render_png(samples: list[Sample], setup: dict, modes: list[str], path: Path) -> None:
    """The page as a picture: monospace text flowed into one column per mode."""
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

    def flow(pieces: list[str]) -> list[tuple[int, int, str]]:
        """(line, column, text) of each piece, wrapping at ``per_line`` characters."""
        out, line, col = [], 0, 0
        for text in pieces:
            text = _display(text)
            if col + len(text) > per_line and col > 0:
                line, col = line + 1, 0
                text = text.lstrip(" ") or text
            out.append((line, col, text))
            col += len(text)
        return out

    layouts = []
    for s in samples:
        cols = [flow([s.prompt, *s.tokens]) for _ in modes]
        layouts.append(max(c[-1][0] for c in cols) + 1)
    header_h, legend_h = 0.75, 0.75
    height = header_h + legend_h + sum((n + 2.6) * line_h for n in layouts) + margin
    fig = plt.figure(figsize=(width, height))

    def fx(x: float) -> float:
        return x / width

    def fy(y: float) -> float:  # y in inches from the top
        return 1 - y / height

    fig.text(fx(margin), fy(0.3), "Per-token credit by redistribution mode", fontsize=14,
             weight="bold", va="center")
    policy = setup["policy"] if len(setup["policy"]) <= 110 else "…" + setup["policy"][-109:]
    fig.text(fx(margin), fy(0.58), f"policy: {policy}   reward model: {setup['reward_model']}",
             fontsize=8.5, color="#444", va="center")
    fig.text(fx(margin), fy(0.86), "colour: reward / max |reward| of the sample (red < 0 < blue); "
             "grey: prompt", fontsize=8.5, color="#444", va="center")
    cax = fig.add_axes((fx(margin + 6.2), fy(0.92), fx(3.0), 0.12 / height))
    fig.colorbar(plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1, 1), cmap=CMAP),
                 cax=cax, orientation="horizontal").ax.tick_params(labelsize=7)

    y = header_h + legend_h
    for n, (s, n_lines) in enumerate(zip(samples, layouts), 1):
        head = f"#{n}   r_C = {s.score:+.3f}"
        if s.gold is not None:
            head += f"   gold = {s.gold:+.3f}"
        if s.prompt_score is not None:
            head += f"   R(x) = {s.prompt_score:+.3f}"
        fig.text(fx(margin), fy(y), head + f"   scale ±{s.scale:.3g}", fontsize=9.5,
                 weight="bold", va="center")
        y += line_h * 1.2
        for c, mode in enumerate(modes):
            x0 = margin + c * (col_w + gap)
            fig.text(fx(x0), fy(y), f"{mode}   Σ = {sum(s.rewards[mode]):+.3f}", fontsize=9,
                     color="#333", va="center", style="italic")
            placed = flow([s.prompt, *s.tokens])
            values = [None, *s.rewards[mode]]
            for (line, col, text), value in zip(placed, values):
                xl, yl = x0 + col * char_w, y + (line + 1) * line_h
                ink = "#888888"
                if value is not None:
                    fig.patches.append(Rectangle(
                        (fx(xl), fy(yl + line_h * 0.45)), fx(len(text) * char_w),
                        line_h * 0.9 / height, transform=fig.transFigure,
                        facecolor=_rgb(value, s.scale), edgecolor="none", zorder=0))
                    ink = _ink(value, s.scale)
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
