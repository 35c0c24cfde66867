"""Append-only JSON-lines files, flushed after every record so a crash loses at most the line in flight."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null says 'not a number' honestly
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(_clean(record), ensure_ascii=False) + "\n")
        self._fh.flush()

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self._fh.write(json.dumps(_clean(r), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a crash: everything before it is intact
    return out


def truncate_after_step(path: Path, step: int) -> None:
    """Drop records of steps after `step` (used on resume, so the files read as one uninterrupted run)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(path)
