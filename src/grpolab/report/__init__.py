"""Where a run's numbers go: JSONL files in the run directory and the console."""
