"""Tasks backed by data: a file or a Hugging Face dataset, read through a row format, split with a seed.

Split: rows are grouped by prompt text (duplicates stay on one side), the groups are shuffled by `data_seed`
and the first ones are held out; or `--eval-path` names the held-out file and training rows with the same
prompt are dropped. Order: the training rows are visited in a fresh permutation per epoch, drawn from (run
seed, data seed, epoch), so the index-th example, and with it a resumed run, is fully determined.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from grpolab.errors import UserError
from grpolab.tasks.base import Example, register_task
from grpolab.tasks.formats import FORMATS, BadRow, RowFormat, level_of
from grpolab.tasks.loaders import RawRow, read_hf_rows, read_rows

MAX_REPORTED = 5  # bad rows quoted in the load report


@dataclass
class LoadReport:
    source: str
    rows: int = 0  # rows read, good or bad
    bad_rows: int = 0
    bad_examples: list[str] = field(default_factory=list)  # the first few bad rows, with where and why
    level_filtered: int = 0  # rows dropped by --level

    def line(self) -> str:
        text = f"{self.source}: {self.rows} rows, {self.rows - self.bad_rows} loaded, {self.bad_rows} bad (skipped)"
        return text + (f", {self.level_filtered} dropped by --level" if self.level_filtered else "")


def convert_rows(rows: Iterable[RawRow], fmt: RowFormat, source: str, prompt_field: str, answer_field: str,
                 skip_bad: bool, id_prefix: str) -> tuple[list[Example], LoadReport]:
    """Examples from raw rows; a bad row stops with an error naming source, line and field unless skipped."""
    report = LoadReport(source)
    examples: list[Example] = []
    for raw in rows:
        report.rows += 1
        try:
            if raw.data is None:
                raise BadRow("", raw.problem)
            prompt, answer, meta = fmt.convert(raw.data, prompt_field, answer_field)
        except BadRow as e:
            what = f"field '{e.field}' {e.problem}" if e.field else e.problem
            message = f"{source}, {raw.where}: {what}"
            if not skip_bad:
                raise UserError(f"{message}. Fix: correct the row, map the fields with --prompt-field/--answer-field, "
                                "or pass --skip-bad-rows to skip and count such rows") from None
            report.bad_rows += 1
            if len(report.bad_examples) < MAX_REPORTED:
                report.bad_examples.append(message)
            continue
        meta = {**meta, "row": dict(raw.data), "level": level_of(raw.data), "where": raw.where}
        examples.append(Example(id=f"{id_prefix}:{raw.where.split()[-1]}", prompt=prompt, answer=answer, meta=meta))
    if not examples:
        raise UserError(f"{source} gave no usable rows ({report.rows} read, {report.bad_rows} bad). Fix: check the "
                        f"file and the field names (expected '{prompt_field}' and '{answer_field}')")
    return examples, report


def _key(example: Example) -> str:
    return " ".join(example.prompt.split())


def split_examples(examples: Sequence[Example], eval_size: int, eval_fraction: float,
                   data_seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out): held-out prompts are drawn by `data_seed`; equal prompts never straddle the split."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(_key(ex), []).append(ex)
    keys = list(groups)
    k = round(eval_fraction * len(keys)) if eval_fraction > 0 else eval_size
    if not 1 <= k < len(keys):
        flag = f"--eval-fraction {eval_fraction}" if eval_fraction > 0 else f"--eval-size {eval_size}"
        raise UserError(f"{flag} holds out {k} of {len(keys)} distinct prompts; at least 1 must be held out and 1 "
                        f"left for training. Fix: --eval-size {max(1, len(keys) // 5)}")
    random.Random(f"split:{data_seed}").shuffle(keys)
    held = set(keys[:k])
    return ([ex for ex in examples if _key(ex) not in held], [groups[key][0] for key in keys[:k]])


class DatasetTask:
    """Training rows in a seeded per-epoch order and a fixed held-out split."""

    def __init__(self, name: str, verifier: str, train: list[Example], held_out: list[Example], seed: int,
                 data_seed: int, system_prompt: str, reports: list[LoadReport]) -> None:
        self.name, self.verifier, self.system_prompt = name, verifier, system_prompt
        self.train, self.held_out, self.reports = train, held_out, reports
        self.seed, self.data_seed = seed, data_seed
        self._epoch, self._order = -1, list(range(len(train)))

    def train_example(self, index: int) -> Example:
        epoch, position = divmod(index, len(self.train))
        if epoch != self._epoch:
            self._order = list(range(len(self.train)))
            random.Random(f"{self.name}-order:{self.seed}:{self.data_seed}:{epoch}").shuffle(self._order)
            self._epoch = epoch
        return self.train[self._order[position]]

    def eval_examples(self) -> Sequence[Example]:
        return self.held_out


def _load(cfg: Any, fmt: RowFormat, path: str, hf_split: str, prompt_field: str,
          answer_field: str) -> tuple[list[Example], LoadReport]:
    if path:
        rows, source, prefix = read_rows(path), f"'{path}'", path.rsplit("/", 1)[-1]
    else:
        rows, source, prefix = read_hf_rows(cfg.hf_dataset, hf_split), f"hf:{cfg.hf_dataset}[{hf_split}]", hf_split
    examples, report = convert_rows(rows, fmt, source, prompt_field, answer_field, cfg.skip_bad_rows, prefix)
    if cfg.level:
        kept = [ex for ex in examples if ex.meta["level"] == cfg.level]
        if not any(ex.meta["level"] is not None for ex in examples):
            raise UserError(f"--level {cfg.level} filters rows by their 'level' field, but {source} has none. "
                            "Fix: drop --level")
        if not kept:
            levels = sorted({ex.meta["level"] for ex in examples if ex.meta["level"] is not None})
            raise UserError(f"--level {cfg.level}: no row of {source} has that level; present: {levels}")
        report.level_filtered = len(examples) - len(kept)
        examples = kept
    return examples, report


def build_file_task(cfg: Any, seed: int, format_name: str) -> DatasetTask:
    """The task for `--data-path FILE` (or `--hf-dataset NAME`) read with the named row format."""
    fmt = FORMATS[format_name]
    if not cfg.data_path and not cfg.hf_dataset:
        raise UserError(f"task '{format_name}' reads data: give --data-path FILE (.jsonl, .json, .csv, .parquet) or "
                        f"--hf-dataset NAME. Fix: e.g. --task {format_name} --data-path train.jsonl")
    if cfg.data_path and cfg.hf_dataset:
        raise UserError(f"both --data-path {cfg.data_path} and --hf-dataset {cfg.hf_dataset} were given. Fix: "
                        "keep one")
    pf, af = cfg.prompt_field or fmt.prompt_field, cfg.answer_field or fmt.answer_field
    examples, report = _load(cfg, fmt, cfg.data_path, cfg.hf_split, pf, af)
    reports = [report]
    if cfg.eval_path or (cfg.hf_dataset and cfg.hf_eval_split):
        held, eval_report = _load(cfg, fmt, cfg.eval_path, cfg.hf_eval_split, pf, af)
        reports.append(eval_report)
        held_keys = {_key(ex) for ex in held}
        train = [ex for ex in examples if _key(ex) not in held_keys]
        if not train:
            raise UserError(f"every training row also appears in the held-out data {eval_report.source}. "
                            "Fix: hold out other data (--eval-path or --hf-eval-split)")
    else:
        train, held = split_examples(examples, cfg.eval_size, cfg.eval_fraction, cfg.data_seed)
    name = f"{format_name}({report.source})"
    return DatasetTask(name, cfg.verifier or fmt.verifier, train, held, seed, cfg.data_seed, cfg.system_prompt,
                       reports)


@register_task("file", summary="your own data: --data-path FILE --prompt-field F --answer-field F")
def _file(cfg: Any, seed: int) -> DatasetTask:
    return build_file_task(cfg, seed, "file")


@register_task("gsm8k", summary="GSM8K rows (question, answer ending in '#### N') from --data-path or --hf-dataset")
def _gsm8k(cfg: Any, seed: int) -> DatasetTask:
    return build_file_task(cfg, seed, "gsm8k")


@register_task("math", summary="MATH / MATH-500 rows (problem, answer or \\boxed{} in solution), by level",
               levels=(1, 2, 3, 4, 5))
def _math(cfg: Any, seed: int) -> DatasetTask:
    return build_file_task(cfg, seed, "math")
