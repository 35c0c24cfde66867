"""The console: a progress bar with live reward, accuracy and step time, evaluation lines, a final summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class ConsoleReporter:
    def __init__(self, cfg: Any, run_dir: Path, quiet: bool = False) -> None:
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        self.console = Console(stderr=False, highlight=False)
        self.progress: Progress | None = None
        self.task_id: Any = None
        self.last_eval = "-"
        self.budget_s = 0.0

    def start(self, first_step: int) -> None:
        if self.quiet:
            return
        c = self.cfg
        self.console.print(f"[bold]grpolab[/] {c.algo.recipe} on {c.task.task} with {c.model.model} "
                           f"(G={c.rollout.group_size}, B={c.train.prompts_per_step}, T={c.rollout.max_new_tokens}, "
                           f"lr={c.train.lr:g}, {'LoRA r=' + str(c.model.lora_rank) if c.model.lora_rank else 'full'})")
        self.console.print(f"run directory: {self.run_dir}")
        # with a time budget the bar fills by whichever limit comes first: steps or training minutes
        self.budget_s = c.train.max_minutes * 60
        counter = TextColumn("step {task.fields[step]}") if self.budget_s else MofNCompleteColumn()
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), counter,
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=False)
        self.progress.start()
        total = 1000 if self.budget_s else c.train.steps
        self.task_id = self.progress.add_task("train", total=total, completed=self._done(first_step, 0.0),
                                              info="", step=first_step)

    def _done(self, step: int, train_seconds: float) -> float:
        if not self.budget_s:
            return step
        return 1000 * min(1.0, max(step / self.cfg.train.steps, train_seconds / self.budget_s))

    def step(self, step: int, m: dict[str, Any]) -> None:
        if self.progress is None:
            return
        info = (f"reward {m.get('reward', 0):.2f}  len {m.get('completion_length', 0):.0f}  "
                f"{m.get('step_seconds', 0):.1f}s/step  held-out {self.last_eval}")
        self.progress.update(self.task_id, completed=self._done(step, m.get("train_seconds", 0.0)), info=info,
                             step=step)

    def eval(self, step: int, result: Any) -> None:
        self.last_eval = f"{100 * result.accuracy:.1f}%"
        if self.quiet:
            return
        line = (f"held-out @ step {step}: accuracy {100 * result.accuracy:.1f}% (strict {100 * result.accuracy_strict:.1f}%)"
                f" on {result.num_examples} problems, mean length {result.mean_length:.0f} tokens")
        (self.progress.console if self.progress else self.console).print(line)

    def message(self, text: str) -> None:
        if not self.quiet:
            (self.progress.console if self.progress else self.console).print(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def summary(self, result: Any) -> None:
        self.close()
        if self.quiet:
            return
        table = Table(title="grpolab run summary", show_header=True)
        table.add_column("")
        table.add_column("held-out accuracy", justify="right")
        table.add_column("strict format", justify="right")
        table.add_column("mean length", justify="right")
        table.add_column("self-check phrases", justify="right")
        table.add_column("truncated", justify="right")
        for name, r in (("before", result.eval_before), ("after", result.eval_after)):
            if r is not None:
                table.add_row(name, f"{100 * r.accuracy:.1f}%", f"{100 * r.accuracy_strict:.1f}%", f"{r.mean_length:.0f}",
                              f"{100 * r.self_check:.0f}%", f"{100 * r.truncated:.0f}%")
        self.console.print(table)
        minutes = result.train_seconds / 60
        self.console.print(f"steps: {result.steps_done}   training time: {minutes:.1f} min (evaluation excluded)")
        if result.best_accuracy is not None:
            self.console.print(f"best held-out accuracy: {100 * result.best_accuracy:.1f}% at step {result.best_step}")
        if result.interrupted:
            self.console.print(f"stopped early; resume with: grpolab train --resume {result.run_dir}")
        self.console.print(f"run directory: {result.run_dir}")
        if result.final_dir is not None:
            self.console.print(f"exported model: {result.final_dir}")
