"""A run's outputs: log.txt in the reference's line format, metrics.jsonl, and loss.png.

Only the main process writes (multi-host runs print once). Lines go to stdout and to log.txt as they happen, so a run
killed from outside still leaves its log.
"""

from __future__ import annotations

import json
from pathlib import Path


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True, append: bool = False):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics: list[dict] = []
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            mode = "a" if append else "w"
            self._log = open(self.run_dir / "log.txt", mode, buffering=1)
            self._metrics = open(self.run_dir / "metrics.jsonl", mode, buffering=1)
            if append:
                self.metrics = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines() if line]

    def print(self, line: str) -> None:
        if self.enabled:
            print(line, flush=True)
            self._log.write(line + "\n")

    def metric(self, record: dict, echo: bool = False) -> None:
        if self.enabled:
            self.metrics.append(record)
            self._metrics.write(json.dumps(record) + "\n")
            if echo:
                print(record, flush=True)

    def plot(self) -> None:
        """loss.png: validation loss (and the training loss per token where known) against the step."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        val = [(m["step"], m["val_loss"]) for m in self.metrics if "val_loss" in m]
        if not val:
            return
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(*zip(*val), "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(self.run_dir.name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.run_dir / "loss.png", dpi=100)
        plt.close(fig)
