"""Bad dataset files end in one DatasetError naming the key, the file and what is wrong
(never a traceback from `datasets` or pyarrow)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from red_cli.data import load_prompts, load_rows
from red_cli.errors import DatasetError


def _fails(path, match, key="dataset.path", column="prompt") -> str:
    with pytest.raises(DatasetError, match=match) as info:
        load_prompts(str(path), "train", column, key=key)
    message = str(info.value)
    assert len(message.splitlines()) <= 3 and "Traceback" not in message
    return message


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_good_files_and_folders_load(tmp_path):
    # A BOM and blank lines are fine in JSON Lines; a .json array of objects too.
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'\xef\xbb\xbf{"prompt": "caf\xc3\xa9"}\n\n{"prompt": "b"}\n')
    assert load_prompts(str(good), "train") == ["café", "b"]
    arr = _write(tmp_path / "arr.json", json.dumps([{"prompt": "a"}, {"prompt": "b"}]))
    assert load_prompts(str(arr), "train") == ["a", "b"]
    # A plain folder of one file type is read like the hub reads it: names become splits.
    folder = tmp_path / "plain"
    folder.mkdir()
    _write(folder / "train.jsonl", '{"prompt": "tr"}\n')
    _write(folder / "test.jsonl", '{"prompt": "te"}\n')
    assert load_prompts(str(folder), "train") == ["tr"]
    assert load_prompts(str(folder), "test") == ["te"]


def test_empty_file(tmp_path):
    for name in ("e.jsonl", "e.csv", "e.json", "e.parquet"):
        msg = _fails(_write(tmp_path / name, ""), "the file is empty")
        assert msg.startswith(f"dataset.path='{tmp_path / name}'")
    _fails(_write(tmp_path / "blank.jsonl", "\n\n"), "the file is empty")


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"\n')
    msg = _fails(path, r"line 3 is not valid JSON", key="dataset.eval_path")
    assert msg.startswith(f"dataset.eval_path='{path}': ")


def test_malformed_json_file(tmp_path):
    path = _write(tmp_path / "bad.json", '[{"prompt": "a"},\n {"prompt": }]')
    _fails(path, r"bad\.json'.*not valid JSON: .* at line 2")


def test_not_utf8_names_offset_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "ok"}\n{"prompt": "café"}\n'.encode("latin-1"))
    _fails(path, r"latin1\.jsonl': not UTF-8 text: byte 0xe9 at byte offset 32 \(line 2\)")
    csv = tmp_path / "utf16.csv"
    csv.write_bytes("prompt\nhello\n".encode("utf-16"))
    _fails(csv, r"utf16\.csv': not UTF-8 text: byte 0xff at byte offset 0 \(line 1\)")


def test_jsonl_lines_that_are_lists(tmp_path):
    path = _write(tmp_path / "lists.jsonl", '["a", "b"]\n["c", "d"]\n')
    _fails(path, r"lists\.jsonl': line 1 is a list \(\[\"a\", \"b\"\]\), not an object")
    path = _write(tmp_path / "arr.json", '[{"prompt": "a"}, ["b"]]')
    _fails(path, r"element 1 of the JSON array is a list")


def test_numeric_prompt_column_is_refused(tmp_path):
    """Numbers are refused, not turned into "1", "2" prompts: almost always the wrong column."""
    path = _write(tmp_path / "n.jsonl", '{"label": 1, "text": "a"}\n{"label": 0, "text": "b"}\n')
    msg = _fails(path, r"dataset\.prompt_column='label' of .*n\.jsonl' holds int64 values \(row 1: 1\)",
                 column="label")
    assert "text columns: text" in msg
    mixed = _write(tmp_path / "m.jsonl", '{"prompt": "a"}\n{"prompt": 2}\n')
    _fails(mixed, r"holds non-text values \(row 2: 2\)")


def test_folder_that_is_not_a_saved_dataset(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(empty, r"empty': a folder with no data files .* not a save_to_disk folder")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write(mixed / "a.jsonl", '{"prompt": "a"}\n')
    _write(mixed / "b.csv", "prompt\nb\n")
    _fails(mixed, r"a folder mixing data file types \(\.csv, \.jsonl\)")
    broken = tmp_path / "broken"
    broken.mkdir()
    _write(broken / "train.jsonl", '{"prompt": "a"}\noops\n')
    _fails(broken, r"broken/train\.jsonl': line 2 is not valid JSON")


def test_unknown_extension(tmp_path):
    _fails(_write(tmp_path / "p.txt", "hello\n"), r"unknown file type '\.txt'; use one of \.jsonl")


def test_csv_with_no_rows(tmp_path):
    _fails(_write(tmp_path / "h.csv", "prompt,label\n"), r"h\.csv': the CSV file has a header line but no rows")


def test_corrupt_and_empty_parquet(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    _fails(bad, r"bad\.parquet': not a readable parquet file \(")
    none = tmp_path / "none.parquet"
    pd.DataFrame({"prompt": pd.Series([], dtype=str)}).to_parquet(none)
    _fails(none, r"none\.parquet': the parquet file has no rows")


def test_missing_local_file(tmp_path):
    _fails(tmp_path / "nope.jsonl", "no such file or directory")
    _fails("data/nope.csv", r"dataset\.path='data/nope\.csv': no such file or directory")


def test_hub_name_while_offline(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError) as info:
        load_rows("nobody-red-tests/no-such-dataset", "train")
    msg = str(info.value)
    assert msg.startswith("dataset.path='nobody-red-tests/no-such-dataset': not a local file and "
                          "the hub is offline")
    assert len(msg.splitlines()) == 1
