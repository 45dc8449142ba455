"""`red eval`, `red report` and `red explain` end to end on the reduced toy world.

Run directories are made by hand from the toy SFT policy (a copy, or a copy with seeded
noise on its weights so that it writes differently), with synthetic metrics for the report:
these tests exercise the verbs, not training.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from red_cli.cli import main
from tests.smoke.conftest import QUICK, compose_train
from tests.unit.test_llm_judge import FakeChat, serve

SMALL = ["prompts.n=12", "batch_size=4", "sampling.max_new_tokens=10", "bootstrap_samples=500"]


def make_run(run_dir: Path, mode: str = "td", seed: int = 0, policy_src: Path | None = None,
             noise: float = 0.0, metrics: list[dict] | None = None) -> Path:
    """A run directory as `red train` leaves it (config.yaml, overrides.json, run.json, ...)."""
    overrides = [f"redistribution={mode}", f"seed={seed}"]
    cfg = compose_train([*QUICK, *overrides], run_dir)
    run_dir.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    (run_dir / "overrides.json").write_text(json.dumps(overrides))
    (run_dir / "run.json").write_text(json.dumps({"status": "complete"}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics or []))
    if policy_src is not None:
        final = run_dir / "checkpoints" / "final_policy"
        shutil.copytree(policy_src, final)
        if noise:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(final)
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(noise * torch.randn(p.shape, generator=gen))
            model.save_pretrained(final)
    return run_dir


def _eval_json(folder: Path) -> dict:
    return json.loads((folder / "eval.json").read_text())


def _stats(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "output_dir"}


def test_eval_gold_two_runs(tiny_toy, tmp_path, capsys, monkeypatch):
    run_a = make_run(tmp_path / "run_a", seed=0, policy_src=tiny_toy.policy, noise=0.05)
    run_b = make_run(tmp_path / "run_b", seed=1, policy_src=tiny_toy.policy)

    main(["eval", str(run_a), f"baseline={run_b}", *SMALL])
    table = capsys.readouterr().out
    assert "| judge | candidate | baseline | n | wins | ties | losses |" in table
    out = run_a / "eval" / "gold_vs_run_b"
    first = _eval_json(out)
    for key in ("win_rate", "ci_low", "ci_high", "n", "ties", "wins", "losses",
                "candidate_mean", "baseline_mean"):
        assert key in first
    assert first["n"] == 12 and first["wins"] + first["ties"] + first["losses"] == 12
    assert 0 <= first["ci_low"] <= first["win_rate"] <= first["ci_high"] <= 1
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(12))
    assert any(r["candidate"] != r["baseline"] for r in rows)  # the noisy policy writes otherwise

    # The same seed gives the same generations and the same numbers.
    again = tmp_path / "again"
    main(["eval", str(run_a), f"baseline={run_b}", *SMALL, f"output_dir={again}"])
    assert _stats(_eval_json(again)) == _stats(first)
    assert (again / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()

    # Interrupted after one batch: the rest is generated and judged, the first batch is not.
    from red_cli.eval.judges import GoldScoreJudge

    lines = (again / "generations.jsonl").read_text().splitlines(keepends=True)
    (again / "generations.jsonl").write_text("".join(lines[:4]) + lines[4][:20])  # torn line
    judged: list[int] = []
    original = GoldScoreJudge.score
    monkeypatch.setattr(GoldScoreJudge, "score",
                        lambda self, r, t: judged.append(len(r.prompts)) or original(self, r, t))
    main(["eval", str(run_a), f"baseline={run_b}", *SMALL, f"output_dir={again}"])
    assert sum(judged) == 2 * 8  # 8 unfinished items, both sides
    assert _stats(_eval_json(again)) == _stats(first)

    # Against itself (baseline=sft is the very policy run_b copied): same seeds, all ties.
    main(["eval", str(run_b), *SMALL[:1], "prompts.n=4", "sampling.max_new_tokens=10"])
    same = _eval_json(run_b / "eval" / "gold_vs_sft")
    assert same["ties"] == same["n"] == 4 and same["win_rate"] == 0.5


def test_eval_llm_judge_over_http(tiny_toy, tmp_path, monkeypatch):
    key = "sk-smoke-secret-0c9e"
    monkeypatch.setenv("RED_SMOKE_JUDGE_KEY", key)
    chat = SecondReplyMalformed()
    server = serve(chat)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    run = make_run(tmp_path / "run", policy_src=tiny_toy.policy, noise=0.05)
    try:
        main(["eval", str(run), "judge=llm", "judge.model=fake-judge", "judge.concurrency=2",
              f"judge.base_url=http://127.0.0.1:{server.server_address[1]}/v1",
              "judge.api_key_env=RED_SMOKE_JUDGE_KEY", "prompts.n=4", "batch_size=4",
              "sampling.max_new_tokens=8", "bootstrap_samples=200"])
    finally:
        server.shutdown()
        server.server_close()
    out = run / "eval" / "llm-fake-judge_vs_sft"
    result = _eval_json(out)
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    # One request checks the endpoint before any sampling; then identical responses are a
    # tie without asking and every other pair is asked in both orders.
    asked = sum(r["candidate"] != r["baseline"] for r in rows)
    assert asked >= 2 and len(chat.requests) == 1 + 2 * asked
    # The question is the toy dataset's (sentiment), as conf/dataset/toy.yaml states it.
    question = chat.requests[-1]["messages"][1]["content"].splitlines()[0]
    assert "movie review" in question and "positive in sentiment" in question
    assert set(chat.auth) == {f"Bearer {key}"}
    # One malformed reply per pair: counted, not fatal; the other order decides.
    assert result["malformed"] == asked and result["n"] == 4 and result["unjudged"] == 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"API key written to {path}"


class SecondReplyMalformed(FakeChat):
    """Answers "A" to the first request about a prompt and "??" to the second."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def answer(self, user: str) -> str:
        prompt = user.split("Response A: ")[0]
        with self.lock:
            first = prompt not in self.seen
            self.seen.add(prompt)
        return "A" if first else "??"


def _metrics(mode: str, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    slope = {"sparse": 0.02, "td": 0.05, "abc": 0.04, "uniform": 0.01}[mode]
    rows = []
    for it in range(20):
        score = -0.3 + slope * it + 0.05 * torch.randn((), generator=gen).item()
        rows.append({"iteration": it, "objective/score": score, "objective/gold": score / 3,
                     "objective/kl": 0.01 * it, "ppo/loss/policy": 0.01 * (it % 3),
                     "ppo/loss/value": 1.0 / (1 + it), "objective/response_length": 10.0})
    return rows


def test_report_sweep(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    n = 0
    for mode in ("sparse", "td", "abc", "uniform"):
        for seed in (0, 1):
            run = make_run(sweep / f"{n}_redistribution={mode},seed={seed}", mode, seed,
                           metrics=_metrics(mode, seed))
            if mode == "td":
                folder = run / "eval" / "gold_vs_sft"
                folder.mkdir(parents=True)
                (folder / "eval.json").write_text(json.dumps({"win_rate": 0.6 + 0.1 * seed}))
            n += 1
    (sweep / "multirun.yaml").write_text("{}\n")

    main(["report", str(sweep), "threshold=0.2", "smooth=3"])
    printed = capsys.readouterr().out
    for name in ("table.md", "table.csv", "curves.png", "frontier.png"):
        assert (sweep / name).is_file()
    assert f"report -> {sweep}" in printed
    assert "redistribution=td" in printed and "win rate vs SFT" in printed
    rows = list(csv.DictReader((sweep / "table.csv").open()))
    assert [r["group"] for r in rows] == [f"redistribution={m}" for m in
                                          ("abc", "sparse", "td", "uniform")]
    assert all(r["seeds"] == "2" for r in rows)
    td = next(r for r in rows if r["group"] == "redistribution=td")
    assert float(td["win_rate_vs_sft"]) == pytest.approx(0.65)
    means = {r["group"]: float(r["mean_score"]) for r in rows}
    assert means["redistribution=td"] > means["redistribution=uniform"]

    import matplotlib.image

    assert matplotlib.image.imread(sweep / "curves.png").shape[1] > 600
    # The panels drawn are in the PNG's text chunk: score, gold and the KL panel.
    assert _png_panels(sweep / "curves.png") == [
        "RM score", "gold score", "KL to the reference (sum over tokens)"]
    assert _png_panels(sweep / "frontier.png") == [
        "RM score vs KL to the reference", "gold score vs KL to the reference"]

    # A second report of the same sweep keeps the first: it goes to report_2, then report_3;
    # overwrite=true writes over the first.
    first = (sweep / "table.md").read_text()
    main(["report", str(sweep), "smooth=2"])
    assert f"report -> {sweep / 'report_2'}" in capsys.readouterr().out
    assert (sweep / "table.md").read_text() == first
    for name in ("table.md", "table.csv", "curves.png", "frontier.png"):
        assert (sweep / "report_2" / name).is_file()
    main(["report", str(sweep)])
    assert (sweep / "report_3" / "table.md").is_file()
    main(["report", str(sweep), "overwrite=true"])
    assert f"report -> {sweep}\n" in capsys.readouterr().out
    assert (sweep / "table.md").read_text() != first  # no threshold column any more
    assert not (sweep / "report_4").exists()

    # A run's own curves.png, as `red train` draws it at the end: two rows of three panels.
    from red_cli.runs import read_metrics
    from red_cli.train.metrics import plot_curves

    run = sweep / "2_redistribution=td,seed=0"
    plot_curves(read_metrics(run / "metrics.jsonl"), run / "plots" / "curves.png", "td / seed 0")
    height, width = matplotlib.image.imread(run / "plots" / "curves.png").shape[:2]
    assert 1300 <= width <= 1500 and 700 <= height <= 900  # 2 rows (1 row: under 500 px)
    assert len(_png_panels(run / "plots" / "curves.png")) == 6

    # Runs named one by one (their names hold `=` and `,`) and an output_dir.
    out = tmp_path / "report"
    main(["report", str(sweep / "2_redistribution=td,seed=0"),
          str(sweep / "3_redistribution=td,seed=1"), f"output_dir={out}"])
    assert len(list(csv.DictReader((out / "table.csv").open()))) == 1


def _png_panels(path: Path) -> list[str]:
    from PIL import Image

    return Image.open(path).text["Description"].removeprefix("panels: ").split(" | ")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.tokens = 0

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if ("class", "tok") in attrs:
            self.tokens += 1


def test_explain_page(tiny_toy, tmp_path):
    run = make_run(tmp_path / "run", "td", policy_src=tiny_toy.policy)
    main(["explain", str(run), "sampling.max_new_tokens=10"])
    out = run / "explain"
    data = json.loads((out / "credit.json").read_text())
    samples = data["samples"]
    assert len(samples) == 8
    page = _Page()
    page.feed((out / "credit.html").read_text())
    assert page.tags["section"] == 8 and page.tags["h3"] == 8 * 3
    assert page.tokens == 3 * sum(len(s["tokens"]) for s in samples)
    text = (out / "credit.html").read_text()
    assert page.tags["dl"] == 1 and page.tags["dt"] >= 5  # the legend: r_C, R(x), scale ...
    assert "the largest |reward| of this sample over all modes" in text
    assert "\ufffd" not in text
    for s in samples:
        assert set(s["rewards"]) == {"sparse", "td", "abc"}
        assert sum(s["rewards"]["sparse"]) == pytest.approx(s["score"], abs=1e-4)
        assert sum(s["rewards"]["abc"]) == pytest.approx(s["score"], abs=1e-4)
        # td, first_token=prompt_baseline: the sum telescopes to r_C - R(x).
        assert sum(s["rewards"]["td"]) == pytest.approx(s["score"] - s["prompt_score"], abs=1e-4)
        assert s["gold"] is not None
    import matplotlib.image

    assert matplotlib.image.imread(out / "credit.png").shape[1] > 1000
    assert os.path.getsize(out / "credit.png") > 20_000


def test_report_threshold_from_a_group(tmp_path, capsys):
    """Iterations until each group's smoothed gold reaches sparse's final gold, by hand."""
    sweep = tmp_path / "sweep"
    metrics = {}
    for n, (mode, seed) in enumerate((m, s) for m in ("sparse", "td") for s in (0, 1, 2)):
        metrics[(mode, seed)] = _metrics(mode, seed)
        make_run(sweep / f"{n}_redistribution={mode},seed={seed}", mode, seed,
                 metrics=metrics[(mode, seed)])
    main(["report", str(sweep), "threshold_group=sparse", "threshold_metric=gold",
          "smooth=3", "final_window=2"])
    rows = {r["group"]: r for r in csv.DictReader((sweep / "table.csv").open())}
    # sparse's final gold: mean over seeds of the mean of each run's last 2 gold values.
    finals = [sum(m["objective/gold"] for m in metrics[("sparse", s)][-2:]) / 2 for s in range(3)]
    threshold = sum(finals) / 3
    for mode in ("sparse", "td"):
        hits = []
        for seed in range(3):
            gold = [m["objective/gold"] for m in metrics[(mode, seed)]]
            for i in range(len(gold)):
                window = gold[max(0, i - 2):i + 1]
                if sum(window) / len(window) >= threshold:
                    hits.append(i)
                    break
        row = rows[f"redistribution={mode}"]
        assert float(row["threshold"]) == pytest.approx(threshold)
        assert int(row["reached_threshold"]) == len(hits)
        assert float(row["iters_to_threshold"]) == pytest.approx(sum(hits) / len(hits))
    assert "iters to gold ≥ sparse's final" in capsys.readouterr().out
    # The full label works too (quoted for Hydra); an unknown group lists the groups.
    main(["report", str(sweep), "threshold_group='redistribution=td'", "threshold_metric=gold"])
    with pytest.raises(SystemExit) as err:
        main(["report", str(sweep), "threshold_group=nope"])
    assert err.value.code != 0
    assert "groups are: redistribution=sparse, redistribution=td" in capsys.readouterr().err
