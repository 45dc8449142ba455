"""An iteration's metrics, and where they go: metrics.jsonl (the source of truth), wandb
(offline by default), a console bar.

Only rank 0 writes. Names: `objective/*`, `ppo/*`, `rewards/*`, `time/*`, `throughput/*`
(README: "A run directory").
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import torch

from red_cli.rlhf.masking import masked_mean
from red_cli.runs import read_metrics, write_atomic

log = logging.getLogger("red")


def iteration_metrics(scored, credit, shaped, returns: torch.Tensor | None,
                      values: torch.Tensor | None, kl_coef: float) -> dict[str, float]:
    """This rank's numbers of one iteration, before the PPO-epoch statistics and timings.

    scored: the reward pipeline's ``Scored``; credit: the mode's ``Credit``; shaped: the
    KL-shaped rewards (``rlhf.kl.KLShapedRewards``); returns / values: the critic's targets
    and old values (None without a critic).
    """
    mask = scored.signals.response_mask
    out = {
        "objective/score": scored.raw_scores.mean().item(),
        "objective/kl": (shaped.kl * mask).sum(-1).mean().item(),
        "objective/kl_coef": kl_coef,
        "objective/response_length": mask.sum(-1).float().mean().item(),
        "objective/eos_fraction": scored.has_eos.float().mean().item(),
        "rewards/sum_minus_score": (credit.rewards.sum(-1) - credit.target).abs().max().item(),
        "rewards/mean_total": (shaped.rewards * mask).sum(-1).mean().item(),
        "rewards/shaped_score": scored.signals.scores.mean().item(),
    }
    if returns is not None:
        out["ppo/returns/mean"] = masked_mean(returns, mask).item()
        out["ppo/val/mean"] = masked_mean(values, mask).item()
    return out


def cost_metrics(cost, returns: torch.Tensor | None, values: torch.Tensor | None,
                 lam: float, episode_cost: float) -> dict[str, float]:
    """This rank's cost numbers of one iteration (with a cost model).

    cost: (the cost pipeline's ``Scored``, the mode's ``Credit`` of the cost, the KL-shaped
    costs); returns / values: the cost critic's targets and old values (None without one);
    lam: the multiplier the advantages used; episode_cost: the window's mean cost it was
    updated from.
    """
    scored, credit, shaped = cost
    mask = scored.signals.response_mask
    out = {
        "objective/cost": scored.raw_scores.mean().item(),
        "costs/sum_minus_score": (credit.rewards.sum(-1) - credit.target).abs().max().item(),
        "costs/mean_total": (shaped.rewards * mask).sum(-1).mean().item(),
        "lagrange/lambda": lam,
        "lagrange/episode_cost": episode_cost,
    }
    if returns is not None:
        out["ppo/cost_returns/mean"] = masked_mean(returns, mask).item()
        out["ppo/cost_val/mean"] = masked_mean(values, mask).item()
    return out


class MetricsLogger:
    """Append one JSON line per iteration; mirror to wandb and a tqdm bar."""

    def __init__(self, run_dir: Path, config: dict, *, enabled: bool, wandb_mode: str,
                 project: str, entity: str | None, tags: list[str], progress_bar: bool,
                 total: int, start: int = 0, name: str | None = None,
                 group: str | None = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._wandb = None
        self._bar = None
        if not enabled:
            return
        # A resumed run forgets iterations logged after its last checkpoint: they are redone.
        # Rewritten atomically: a kill now must not lose the iterations kept.
        kept = [m for m in read_metrics(self.path) if m["iteration"] < start]
        write_atomic(self.path, "".join(json.dumps(m) + "\n" for m in kept).encode())
        if wandb_mode != "disabled":
            self._wandb = self._start_wandb(run_dir, config, wandb_mode, project, entity, tags,
                                            name or run_dir.name, group)
        if progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc="ppo", unit="it", dynamic_ncols=True)

    @staticmethod
    def _start_wandb(run_dir, config, mode, project, entity, tags, name, group):
        import wandb

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(project=project, entity=entity, tags=list(tags), config=config,
                          dir=str(run_dir), mode=mode, id=run_id, resume="allow", group=group,
                          name=name, settings=wandb.Settings(console="off"))

    def log(self, iteration: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"iteration": iteration, **{k: float(v) for k, v in values.items()}}
        # One write of the whole line: a kill or a full disk leaves at most an unfinished
        # last line, which read_metrics drops on resume.
        with self.path.open("ab") as f:
            f.write((json.dumps(record) + "\n").encode())
        if self._wandb is not None:
            self._wandb.log(values, step=iteration)
        if self._bar is not None:
            post = {"score": values.get("objective/score"), "kl": values.get("objective/kl"),
                    "gold": values.get("objective/gold")}
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in post.items() if v is not None})
            self._bar.update(1)
        else:
            shown = ("objective/score", "objective/kl", "objective/gold", "ppo/loss/policy")
            log.info("iter %d  %s", iteration,
                     "  ".join(f"{k.split('/')[-1]}={values[k]:.4f}" for k in shown if k in values))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()


CURVE_PANELS = (
    ("objective/score", "RM score"),
    ("objective/gold", "gold score"),
    ("objective/kl", "KL to the reference (sum over tokens)"),
    ("ppo/loss/policy", "policy loss"),
    ("ppo/loss/value", "value loss"),
    ("objective/response_length", "response length (tokens)"),
    ("ppo/policy/entropy", "policy entropy"),
)


def plot_curves(metrics: list[dict], path: Path, title: str = "") -> list[str]:
    """One run's curves in two rows of three panels (about 1400 x 800 px): RM score, gold, KL /
    policy loss, value loss, response length (entropy fills a missing panel); only metrics
    that were logged. Each panel shows the raw values thinly and, from 20 iterations on, a
    moving average over about 1/20 of the run. Returns the panel titles."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(k, t) for k, t in CURVE_PANELS if any(m.get(k) is not None for m in metrics)][:6]
    ncols = 3
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(12.7, 3.45 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, label) in zip(axes.flat, panels):
        rows = [(m["iteration"], m[key]) for m in metrics if m.get(key) is not None]
        xs = np.asarray([r[0] for r in rows])
        ys = np.asarray([r[1] for r in rows], dtype=np.float64)
        window = max(1, len(ys) // 20)
        if len(ys) >= 20 and window > 1:
            c = np.cumsum(np.insert(ys, 0, 0.0))
            idx = np.arange(1, len(ys) + 1)
            lo = np.maximum(idx - window, 0)
            ax.plot(xs, ys, lw=0.8, color="C0", alpha=0.35, label="per iteration")
            ax.plot(xs, (c[idx] - c[lo]) / (idx - lo), lw=1.8, color="C0",
                    label=f"{window}-iteration moving average")
        else:
            ax.plot(xs, ys, lw=1.6, color="C0", marker="o" if len(ys) < 20 else None, ms=3)
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("iteration")
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    if panels and len(axes.flat[0].get_lines()) > 1:
        axes.flat[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or "training curves", fontsize=13)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Title": title or "training curves",
                                         "Description": "panels: "
                                         + " | ".join(t for _, t in panels)})
    plt.close(fig)
    return [t for _, t in panels]
