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
  grpolab calibrate --task countdown              pass rate per level, and the levels worth training on
  grpolab train --task gsm8k --data-path train.jsonl --rewards correct:1,format:0.1
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

    p = sub.add_parser("calibrate", help="base pass rate per difficulty level, and the levels worth training on",
                       description="Sample completions for problems of each difficulty level at the training "
                       "temperature and report the pass rate with a Wilson 95%% interval. GRPO learns from groups "
                       "whose completions disagree, so it recommends levels whose pass rate is neither ~0 nor ~1.")
    _add_config_flags(p, only=("model", "task", "reward", "rollout", "eval"))
    p.add_argument("--levels", default="", help="comma-separated levels to try (default: all the task's levels)")
    p.add_argument("--problems", type=int, default=32, help="training problems per level (default 32)")
    p.add_argument("--samples", type=int, default=8, help="completions per problem (default 8)")
    p.add_argument("--target-low", type=float, default=0.1, help="lowest pass rate worth training on (default 0.1)")
    p.add_argument("--target-high", type=float, default=0.9, help="highest pass rate worth training on (default 0.9)")
    p.add_argument("--out", default="", help="also write the result as JSON to this file")

    p = sub.add_parser("plan", help="predict peak RAM and step time of a setting; recommend settings that fit",
                       description="Predict peak RAM (and, calibrated on this machine, seconds per step) before a run.")
    p.add_argument("--memory", help="recommend settings that fit in this much RAM, e.g. 8GB")
    p.add_argument("--calibrate", action="store_true", help="measure this machine (~1 minute) for time predictions; "
                   "the result is cached and reused")
    _add_config_flags(p, only=("model", "task", "rollout", "algo", "train"))

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
    from grpolab.presets import DEMO_AMX, demo_settings
    from grpolab.trainer import train

    base, why = demo_settings(getattr(args, "device", "auto"))
    if why and not set(vars(args)) & set(DEMO_AMX):  # said only where the flags given do not decide it
        print(why, flush=True)
    cfg = _config_from_args(args, base=base)
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


def cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from grpolab.calibrate import calibrate

    try:
        levels = [int(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--levels '{args.levels}' must be comma-separated integers, e.g. --levels 1,2,3") from None
    cfg = _config_from_args(args)
    print(f"task {cfg.task.task}, model {cfg.model.model}: {args.problems} problems x {args.samples} samples per "
          "level, "
          f"temperature {cfg.rollout.temperature}, up to {cfg.rollout.max_new_tokens} tokens")
    print(f"{'level':>5}  {'pass rate':>9}  {'95% CI':>15}  {'solved':>6}  {'mixed':>5}  verdict")

    def show(r) -> None:  # type: ignore[no-untyped-def]
        level = "all" if r.level is None else str(r.level)
        print(f"{level:>5}  {r.pass_rate:9.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]  {r.solved_any:6.2f}  "
              f"{r.mixed:5.2f}  {r.verdict}", flush=True)

    result = calibrate(cfg, levels or None, args.problems, args.samples, args.target_low, args.target_high,
                       on_level=show)
    window = f"pass rate in [{args.target_low:g}, {args.target_high:g}]"
    if result.recommended:
        names = ", ".join("all" if lv is None else str(lv) for lv in result.recommended)
        print(f"recommended training levels: {names} ({window})")
    else:
        closest = min(result.levels, key=lambda r: abs(r.pass_rate - (args.target_low + args.target_high) / 2))
        print(f"no level has a {window}; the closest is {'all' if closest.level is None else closest.level} "
              f"(pass rate {closest.pass_rate:.3f}): try more --max-new-tokens, another model or other levels")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result.to_json(), f, indent=2)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from grpolab import plan as P
    from grpolab.models import cache_dir

    cfg = _config_from_args(args)
    arch = P.arch_for(cfg.model.model)
    setting = P.Setting.from_config(cfg)
    cal_path = cache_dir() / "calibration" / (cfg.model.model.replace("/", "_") + ".json")
    cal = P.Calibration.load(cal_path)
    if args.calibrate:
        from grpolab.models import load_model

        print("calibrating on this machine (decode and forward/backward measurements) ...", flush=True)
        model, tok = load_model(cfg.model)
        cal = P.calibrate(model, tok)
        cal.save(cal_path)
    mem = P.predict_memory(arch, setting)
    print(f"model {cfg.model.model}: {arch.params / 1e6:.0f}M parameters, {arch.layers} layers; "
          f"G={setting.group_size} B={setting.prompts_per_step} T={setting.max_new_tokens} "
          f"{'LoRA r=' + str(setting.lora_rank) if setting.lora_rank else 'full fine-tune'}"
          f"{', micro-batch ' + str(setting.micro_batch) if setting.micro_batch else ''}"
          f"{', gradient checkpointing' if setting.gradient_checkpointing else ''}, --allocator {setting.allocator}"
          f"{', --autocast ' + setting.autocast if setting.autocast != 'off' else ''}")
    print(mem.table())
    if cal is not None:
        t = P.predict_time(arch, setting, cal)
        print(f"  {'predicted seconds per step':30s} {t.step_s:6.1f} s (generation {t.generation_s:.1f} s at full "
              f"length, update {t.update_s:.1f} s, every row trained)")
        if setting.autocast != "off" and not cal.train_gflops_bf16:
            print("  (the calibration has no bf16 rate: the update is predicted at the fp32 rate; rerun with "
                  "--calibrate on a machine with native bf16, where `grpolab train --autocast bf16` is allowed)")
    else:
        print("  (add --calibrate once to predict seconds per step on this machine)")
    print(f"  {'available now':30s} {P.available_memory() / P.GB:6.2f} GB")
    print("\npeak RAM" + (" and seconds per step" if cal else "") + " by rollouts x max new tokens:")
    print(P.grid(arch, setting, cal))
    if args.memory:
        limit = P.parse_size(args.memory)
        fits = P.recommend(arch, setting, limit)
        if mem.peak <= limit:
            print(f"\nthe setting fits in {args.memory} (predicted {mem.peak / P.GB:.1f} GB)")
        print(f"\nsettings near this one that fit in {args.memory}:" if fits else
              f"\nnothing near this setting fits in {args.memory}; try a smaller model")
        for what, s, peak in fits:
            extra = f", {P.predict_time(arch, s, cal).step_s:.0f} s/step" if cal else ""
            print(f"  {what:45s} ~{peak / P.GB:.1f} GB{extra}")
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
    from grpolab.tasks import task_info, task_names

    for name in task_names():
        info = task_info(name)
        levels = f" (levels {info.levels[0]}-{info.levels[-1]})" if info.levels else ""
        print(f"{name:11s} {info.summary}{levels}")
    return 0


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "eval": cmd_eval, "calibrate": cmd_calibrate,
            "recipes": cmd_recipes, "tasks": cmd_tasks, "plan": cmd_plan}


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
