"""Read rows from local files (JSONL, JSON, CSV, Parquet) or a Hugging Face dataset, each with its location.

A row that cannot even be read (not valid UTF-8, not JSON, not an object) comes back with `data=None` and the
problem, so the caller can stop with an error naming the file and line, or skip and count it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from grpolab.errors import UserError

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class RawRow:
    where: str  # 'line 12', 'item 3', 'row 7': what to tell the user
    data: dict[str, Any] | None  # None when the row could not be read at all
    problem: str = ""  # why data is None


def read_rows(path: str | Path) -> Iterator[RawRow]:
    """Rows of a local data file; the format follows the suffix."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"data file '{path}' has suffix '{path.suffix}'; allowed: {', '.join(SUFFIXES)}. "
                        "Fix: rename it or convert it to JSONL")
    if not path.is_file():
        raise UserError(f"data file '{path}' does not exist or is not a file. Fix: check --data-path/--eval-path")
    if kind == "parquet":
        yield from _parquet_rows(path)
        return
    raw = path.read_bytes()
    yield from {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows}[kind](raw, path)


def _undecodable(text: str) -> str:
    """'' when `text` decoded cleanly, else where the first bad byte is (surrogateescape marks it)."""
    for col, ch in enumerate(text, 1):
        if "\udc80" <= ch <= "\udcff":
            return f"not valid UTF-8 (byte 0x{ord(ch) - 0xDC00:02x} at column {col})"
    return ""


def _jsonl_rows(raw: bytes, path: Path) -> Iterator[RawRow]:
    for number, line in enumerate(raw.decode("utf-8", errors="surrogateescape").splitlines(), 1):
        where = f"line {number}"
        if not line.strip():
            continue  # blank lines separate nothing in JSONL; they are not rows
        bad = _undecodable(line)
        if bad:
            yield RawRow(where, None, bad)
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            yield RawRow(where, None, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(data, dict):
            yield RawRow(where, None, f"a JSON {type(data).__name__}, not an object with fields")
            continue
        yield RawRow(where, data)


def _json_rows(raw: bytes, path: Path) -> Iterator[RawRow]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"data file '{path}' is not valid UTF-8 (byte {e.start}). Fix: re-save it as UTF-8, or "
                        "convert it to JSONL so bad rows can be skipped one by one")
    except json.JSONDecodeError as e:
        raise UserError(f"data file '{path}' is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
                        "Fix: correct the file, or use JSONL so bad rows can be skipped one by one")
    if isinstance(data, dict):
        lists = [k for k in ("data", "rows", "examples", "train") if isinstance(data.get(k), list)]
        if not lists:
            raise UserError(f"data file '{path}' holds a JSON object without a list of rows under 'data', 'rows', "
                            "'examples' or 'train'. Fix: make the top level a list of objects")
        data = data[lists[0]]
    if not isinstance(data, list):
        raise UserError(f"data file '{path}' holds a JSON {type(data).__name__}; expected a list of objects")
    for number, item in enumerate(data, 1):
        if isinstance(item, dict):
            yield RawRow(f"item {number}", item)
        else:
            yield RawRow(f"item {number}", None, f"a JSON {type(item).__name__}, not an object with fields")


def _csv_rows(raw: bytes, path: Path) -> Iterator[RawRow]:
    text = raw.decode("utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        return
    for row in reader:
        where = f"line {reader.line_num}"
        if None in row:
            yield RawRow(where, None, f"{len(reader.fieldnames) + len(row[None])} fields but the header names "
                                      f"{len(reader.fieldnames)}")
            continue
        bad = next((f"field '{k}' is {_undecodable(v)}" for k, v in row.items() if v and _undecodable(v)), "")
        if bad:
            yield RawRow(where, None, bad)
            continue
        yield RawRow(where, {k: v for k, v in row.items() if v is not None})


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading '{path}' needs pyarrow, which is not installed. Fix: pip install 'grpolab[datasets]' "
                        "(or pyarrow), or convert the file to JSONL") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"data file '{path}' is not a readable Parquet file: {e}") from None
    for number, row in enumerate(rows, 1):
        yield RawRow(f"row {number}", row)


def read_hf_rows(spec: str, split: str) -> Iterator[RawRow]:
    """Rows of a Hugging Face dataset named 'owner/name' or 'owner/name:config' (needs `datasets` and the hub)."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"--hf-dataset {spec} needs the optional 'datasets' package. Fix: pip install "
                        "'grpolab[datasets]', or download the data and pass --data-path FILE") from None
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # any failure of the hub or the library becomes one clear message with its cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"could not load Hugging Face dataset '{spec}' split '{split}': {type(e).__name__}: {first}. "
                        "Fix: check the name, config and split and that the hub is reachable (HF_HUB_OFFLINE=1 "
                        "forbids downloads), or download the data and pass --data-path FILE") from e
    for number, row in enumerate(ds, 1):
        yield RawRow(f"row {number}", dict(row))
