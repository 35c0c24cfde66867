"""Command line: parse -> Config -> library call. `grpolab --help` lists the commands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from typing import Any, Sequence

from grpolab.config import SECTIONS, Config
from grpolab.errors import UserError

DESCRIPTION = """grpolab: turn a small language model into a reasoning model with reinforcement learning from
verifiable rewards (GRPO and its successors), on a laptop CPU first."""

EPILOG = """examples:
  grpolab demo                                    train the embedded default, held-out accuracy before/after
  grpolab train --digits 2 --steps 200            two-digit addition, default recipe (grpo)
  grpolab train --recipe dr-grpo --lora-rank 16 --lr 1e-4
  grpolab train --config run.toml --seed 1        settings from a file, one overridden
  grpolab train --resume runs/<name>              continue after Ctrl-C or a crash
  grpolab eval --model runs/<name>/final --digits 2
"""


def _add_config_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    for section, klass in SECTIONS.items():
        if only is not None and section not in only:
            continue
        group = parser.add_argument_group(f"{section} settings")
        for f in fields(klass):
            default = f.default if f.default is not MISSING else None
            shown = "from the recipe" if default is None else repr(default)
            help_text = f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%")
            flag = "--" + f.name.replace("_", "-")
            if str(f.type).startswith("bool"):
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                   help=help_text)
            else:
                choices = f.metadata.get("choices")
                group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=help_text,
                                   metavar="{" + ",".join(choices) + "}" if choices else f.name.upper())


def _config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Config:
    flat = {k: v for k, v in vars(args).items() if k in _config_keys()}
    if getattr(args, "config", None):
        cfg = Config.from_file(args.config)
        return cfg.replace(**flat) if flat else cfg
    return Config.from_flat({**(base or {}), **flat})


def _config_keys() -> set[str]:
    return {f.name for klass in SECTIONS.values() for f in fields(klass)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpolab", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model with GRPO or another recipe", description="Train with RL from "
                       "verifiable rewards. Every setting below can also come from --config FILE (TOML sections "
                       "[model], [task], [reward], [rollout], [algo], [train], [eval], [run], or flat keys).")
    p.add_argument("--config", help="TOML or JSON file with settings; flags given here override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    _add_config_flags(p)

    p = sub.add_parser("demo", help="the main job: train the embedded default model and report held-out accuracy "
                       "before and after")
    _add_config_flags(p)

    p = sub.add_parser("eval", help="greedy held-out accuracy of a model on a task")
    _add_config_flags(p, only=("model", "task", "rollout", "eval"))
    p.add_argument("--show", type=int, default=3, help="print this many example completions (default 3)")

    sub.add_parser("recipes", help="list the named recipes with their knobs and sources")
    sub.add_parser("tasks", help="list the built-in tasks")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from grpolab.trainer import train

    if args.resume:
        flat = {k: v for k, v in vars(args).items() if k in _config_keys()}
        extendable = {"steps", "max_minutes", "quiet"}
        if set(flat) - extendable:
            raise UserError(f"--resume continues a run with its saved settings; only {', '.join(sorted(extendable))} "
                            f"may change (got {', '.join(sorted(set(flat) - extendable))})")
        result = train(None, resume=args.resume, overrides=flat)  # type: ignore[arg-type]
    else:
        result = train(_config_from_args(args))
    return 130 if result.interrupted else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from grpolab.presets import DEMO
    from grpolab.trainer import train

    cfg = _config_from_args(args, base=DEMO)
    result = train(cfg)
    return 130 if result.interrupted else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from grpolab.evaluate import evaluate_model

    cfg = _config_from_args(args)
    result = evaluate_model(cfg)
    print(f"model: {cfg.model.model}")
    print(f"held-out accuracy: {100 * result.accuracy:.1f}% (strict format {100 * result.accuracy_strict:.1f}%) on "
          f"{result.num_examples} problems; mean length {result.mean_length:.0f} tokens; {result.seconds:.0f} s")
    for r in result.records[: args.show]:
        mark = "right" if r["correct"] else "wrong"
        print(f"--- {r['prompt']}  (answer {r['answer']}, {mark}: {r['reason']})\n{r['completion'].strip()}")
    return 0


def cmd_recipes(_: argparse.Namespace) -> int:
    from grpolab.recipes import BASE_KNOBS, RECIPES

    for r in RECIPES.values():
        knobs = r.expanded()
        shown = ", ".join(f"{k}={v}" for k, v in knobs.items() if v != BASE_KNOBS[k] or k in r.knobs)
        print(f"{r.name:14s} {r.source}")
        print(f"{'':14s} {shown}")
        if r.notes:
            print(f"{'':14s} note: {r.notes}")
    print("\nEvery knob can also be set on its own, e.g. --clip-high 0.28; see `grpolab train --help`.")
    return 0


def cmd_tasks(_: argparse.Namespace) -> int:
    from grpolab.tasks import task_names

    for name in task_names():
        print(name)
    return 0


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "eval": cmd_eval, "recipes": cmd_recipes, "tasks": cmd_tasks}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"grpolab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grpolab: interrupted; the last completed checkpoint is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
