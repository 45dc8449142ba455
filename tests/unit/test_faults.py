"""What a kill or a full disk leaves behind, read back: the run directory's files are either
whole or recoverable without manual edits (faults injected by hand)."""

from __future__ import annotations

import errno
import json
import logging

import pytest

from red_cli import runs
from red_cli.errors import UserError
from red_cli.train.metrics import MetricsLogger


def _logger(run_dir, start=0):
    return MetricsLogger(run_dir, {}, enabled=True, wandb_mode="disabled", project="p",
                         entity=None, tags=[], progress_bar=False, total=10, start=start)


def test_a_cut_last_metrics_line_is_dropped_on_resume(tmp_path, caplog):
    logger = _logger(tmp_path)
    for it in range(3):
        logger.log(it, {"objective/score": float(it)})
    # A kill or a full disk in the middle of the next append.
    with (tmp_path / "metrics.jsonl").open("ab") as f:
        f.write(b'{"iteration": 3, "objective/sco')
    with caplog.at_level(logging.WARNING, logger="red"):
        rows = runs.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert "unfinished last line" in caplog.text
    # The resume rewrites the file without it; later appends are whole lines again.
    logger = _logger(tmp_path, start=2)
    logger.log(2, {"objective/score": 20.0})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert [json.loads(line)["iteration"] for line in text.splitlines()] == [0, 1, 2]
    assert json.loads(text.splitlines()[-1])["objective/score"] == 20.0


def test_a_broken_line_inside_metrics_is_an_error_naming_it(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        runs.read_metrics(tmp_path / "metrics.jsonl")


def test_a_kill_during_the_resume_rewrite_keeps_every_metric(tmp_path, monkeypatch):
    logger = _logger(tmp_path)
    for it in range(4):
        logger.log(it, {"objective/score": float(it)})
    before = (tmp_path / "metrics.jsonl").read_bytes()

    def killed(self, target):  # the rename never happens: the process died first
        raise KeyboardInterrupt

    monkeypatch.setattr(type(tmp_path), "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _logger(tmp_path, start=2)
    monkeypatch.undo()
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    assert [r["iteration"] for r in runs.read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3]


def test_run_json_is_written_in_place_when_the_disk_is_full(tmp_path, monkeypatch):
    runs.write_status(tmp_path, "running")
    assert (tmp_path / "run.json").stat().st_size == runs.STATUS_BYTES

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "write_atomic", full)
    runs.write_status(tmp_path, "failed", error="OSError: [Errno 28] No space left on device")
    info = runs.read_run_json(tmp_path)
    assert info["status"] == "failed" and "No space left" in info["error"]
    assert (tmp_path / "run.json").stat().st_size == runs.STATUS_BYTES
    # Any other error is not hidden.
    monkeypatch.setattr(runs, "write_atomic",
                        lambda p, d: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")))
    with pytest.raises(OSError):
        runs.write_status(tmp_path, "complete")


def test_a_long_error_keeps_run_json_at_its_size(tmp_path):
    runs.write_status(tmp_path, "failed", error="x" * 10_000)
    assert (tmp_path / "run.json").stat().st_size == runs.STATUS_BYTES
    assert runs.read_status(tmp_path) == "failed"


def test_run_guarded_records_interrupts_and_failures(tmp_path):
    from red_cli.errors import ConfigError, Interrupted

    def stop():
        raise Interrupted("interrupted after iteration 3")

    with pytest.raises(Interrupted):
        runs.run_guarded(tmp_path, stop)
    assert runs.read_run_json(tmp_path)["status"] == "interrupted"

    def bad():
        raise ConfigError("reward_model.path='x': nope")

    with pytest.raises(ConfigError):
        runs.run_guarded(tmp_path, bad)
    info = runs.read_run_json(tmp_path)
    assert info == {**info, "status": "failed", "error": "reward_model.path='x': nope"}


def test_resume_needs_no_checkpoint_and_refuses_only_a_finished_run(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    runs.write_status(tmp_path, "failed", error="NaN at iteration 0")
    assert runs.resumable_problem(tmp_path) is None  # starts again from iteration 0
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("iter_9\n")
    runs.write_status(tmp_path, "complete")
    assert "already finished" in runs.resumable_problem(tmp_path, iterations=10)
    assert runs.resumable_problem(tmp_path, iterations=20) is None  # going on is allowed
