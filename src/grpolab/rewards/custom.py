"""User reward functions with TRL's signature: `--reward-fn my_rewards.py:func` or `--reward-fn package.module:func`.

A function is called like TRL calls it: `func(prompts=[...], completions=[...], **columns)`, once per batch,
with one entry per completion. `columns` are the example's dataset columns (each a list aligned with the
completions): the source row's fields for file data, the task's metadata for generated tasks (countdown: `nums`,
`target`), and `answer`, the reference answer the verifier uses (for GSM8K the final number, as in TRL recipes
that map `answer` to the number). A function without `**kwargs` gets only the columns it names.

It returns one float per completion; `None` means "this function does not score this completion" and adds 0,
as in TRL. An exception, a NaN/inf, a wrong length or a non-number is an error naming the function and the
example, never a silent 0.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from grpolab.errors import UserError
from grpolab.tasks.base import Example

BatchFn = Callable[[Sequence[str], Sequence[Example]], list[float]]
_INTERNAL_META = {"row", "where"}


def parse_reward_fn_spec(spec: str) -> list[tuple[str, str, float]]:
    """'a.py:f,pkg.mod:g:0.5' -> [('a.py', 'f', 1.0), ('pkg.mod', 'g', 0.5)]."""
    out = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        parts = item.split(":")
        weight = 1.0
        if len(parts) == 3:
            try:
                weight = float(parts[2])
            except ValueError:
                raise UserError(f"--reward-fn '{item}': the weight '{parts[2]}' is not a number. "
                                "Fix: e.g. --reward-fn my_rewards.py:func:0.5") from None
            parts = parts[:2]
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise UserError(f"--reward-fn '{item}' must be 'file.py:function' or 'module:function', optionally "
                            "followed by ':weight'. Fix: e.g. --reward-fn my_rewards.py:length_reward:0.1")
        if not math.isfinite(weight):
            raise UserError(f"--reward-fn '{item}': the weight must be a finite number")
        out.append((parts[0].strip(), parts[1].strip(), weight))
    return out


def load_function(target: str, name: str) -> Callable[..., Any]:
    """The function `name` from a Python file (path ending in .py) or an importable module."""
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise UserError(f"--reward-fn: file '{target}' does not exist. Fix: give the path of a .py file")
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        spec = importlib.util.spec_from_file_location(f"grpolab_user_reward_{path.stem}_{digest}", path)
        if spec is None or spec.loader is None:
            raise UserError(f"--reward-fn: cannot import '{target}' as Python")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file failed to import: say which and why
            raise UserError(f"--reward-fn: importing '{target}' raised {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise UserError(f"--reward-fn: cannot import module '{target}': {e}. Fix: a module on the Python path, "
                            "or a file path ending in .py") from e
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_"))
        raise UserError(f"--reward-fn: '{target}' has no function '{name}'; functions there: "
                        f"{', '.join(found) or 'none'}")
    return fn


def columns(examples: Sequence[Example]) -> dict[str, list[Any]]:
    """Dataset columns as TRL passes them: name -> one value per completion."""
    rows = []
    for ex in examples:
        row = dict(ex.meta.get("row", {}))
        row.update({k: v for k, v in ex.meta.items() if k not in _INTERNAL_META and (v is not None or k in row)})
        row["answer"] = ex.answer
        rows.append(row)
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in names}


def _float(value: Any) -> float | None:
    """None stays None ('no score'); numbers (bool, int, float, numpy/torch scalars) become floats."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"the text {value!r:.40}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"a {type(value).__name__}, not a number") from None


def trl_batch_fn(fn: Callable[..., Any], name: str, message_format: str = "standard") -> BatchFn:
    """Adapt a TRL-style reward function to grpolab's batch reward term."""
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    required = [k for k, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]

    def call(completions: Sequence[str], examples: Sequence[Example]) -> list[Any]:
        cols = columns(examples)
        if message_format == "conversational":
            kw: dict[str, Any] = {"prompts": [[{"role": "user", "content": ex.prompt}] for ex in examples],
                                  "completions": [[{"role": "assistant", "content": c}] for c in completions]}
        else:
            kw = {"prompts": [ex.prompt for ex in examples], "completions": list(completions)}
        missing = [k for k in required if k not in kw and k not in cols]
        if missing:
            raise UserError(f"reward function '{name}' needs argument(s) {', '.join(missing)}, but the data has "
                            f"columns {', '.join(cols)}. Fix: give them defaults, or use a task whose data has them")
        kw.update({k: v for k, v in cols.items() if k not in kw})
        return fn(**(kw if takes_all else {k: v for k, v in kw.items() if k in params}))

    def batch(completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        try:
            out = call(completions, examples)
        except UserError:
            raise
        except Exception as e:  # find the example that makes it fail, and report that one
            i = next((i for i in range(len(examples)) if _raises(call, completions[i:i + 1], examples[i:i + 1])), 0)
            raise UserError(f"reward function '{name}' raised {type(e).__name__}: {e} on example {examples[i].id!r} "
                            f"(completion starts {completions[i][:60]!r})") from e
        if isinstance(out, (str, bytes)) or not hasattr(out, "__len__") or len(out) != len(completions):
            got = f"length {len(out)}" if hasattr(out, "__len__") else type(out).__name__
            raise UserError(f"reward function '{name}' returned {got}; it must return a list of {len(completions)} "
                            "floats, one per completion")
        values = []
        for i, v in enumerate(out):
            try:
                f = _float(v)
            except TypeError as e:
                raise UserError(f"reward function '{name}' returned {e} for example {examples[i].id!r}") from None
            if f is not None and not math.isfinite(f):
                raise UserError(f"reward function '{name}' returned {f} on example {examples[i].id!r} (completion "
                                f"starts {completions[i][:60]!r}); rewards must be finite numbers (None = no score)")
            values.append(0.0 if f is None else f)
        return values

    return batch


def _raises(call: Callable[..., Any], completions: Sequence[str], examples: Sequence[Example]) -> bool:
    try:
        call(completions, examples)
    except Exception:  # only locating the failing example; the original error is the one reported
        return True
    return False


def build_custom_terms(spec: str, message_format: str = "standard") -> list[tuple[str, float, BatchFn]]:
    """(term name, weight, batch function) for each function named in `--reward-fn`."""
    return [(name, weight, trl_batch_fn(load_function(target, name), name, message_format))
            for target, name, weight in parse_reward_fn_spec(spec)]
