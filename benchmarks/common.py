"""Shared by the benchmark scripts: what machine this is, and tables printed as Markdown."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Sequence

import torch

# the data set: ../shared/data beside the repo, or $PNEUMO_DATA (a lent GPU machine has its own copy)
DATA = Path(os.environ.get("PNEUMO_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data")


def machine() -> str:
    """CPU model, cores, memory, torch version and GPU, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], ran_on: str | None = None) -> str:
    """A Markdown table headed by its title and the machine it ran on (this one unless `ran_on` says)."""

    def cell(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = [f"**{title}** — {ran_on or machine()}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def shifted_report(run: Path, report: dict) -> dict:
    """A run's validation metrics under the simulated shifts: from its val_report.json, or, for a
    recipe that did not choose by them (so did not compute them), measured now on its own
    validation films (`pneumo evaluate RUN/split.csv --split val --model RUN --shifts`)."""
    if report.get("shifted"):
        return report["shifted"]
    from pneumo.evaluation.evaluate import evaluate

    return evaluate(run / "split.csv", model=run, split="val", n_boot=0, shifts=True, progress=False).shifted
