"""The README's examples work as written: its Python runs, and every command and option it names exists."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from pneumo.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> dict[str, Any]:
    """Every command by its full name ("predict", "data summary")."""
    found: dict[str, Any] = {}

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):  # a group (typer ships its own click)
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = cmd

    walk(typer.main.get_command(app), "")
    return found


def _readme_commands() -> list[str]:
    """`pneumo ...` as the README writes it: in inline code, and in its shell blocks."""
    inline = re.findall(r"`(pneumo [^`]+)`", README)
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", README, flags=re.S))
    shell = re.findall(r"(?:^|&& |-m )(pneumo [^&#\n\\]+)", blocks, flags=re.M)
    return [c.replace("\\|", "|") for c in inline + shell]


def test_every_command_and_option_the_readme_names_exists() -> None:
    commands = _commands()
    seen = 0
    for line in _readme_commands():
        words = line.split()[1:]
        name = next((n for n in sorted(commands, key=len, reverse=True) if words[: len(n.split())] == n.split()), None)
        assert name is not None, f"the README names a command pneumo does not have: {line}"
        options = {opt for p in commands[name].params for opt in p.opts + p.secondary_opts}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line):
            assert option in options, f"`{line}` in the README: {name} has no {option}"
        seen += 1
    assert seen > 20


@pytest.mark.slow  # trains a quick run
def test_the_readme_python_runs_as_written(tmp_path: Path) -> None:
    """From a project folder with ../shared/data beside it, as the README assumes."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for code in blocks:
        done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    assert (project / "runs" / "quick" / "val_report.json").is_file()
    assert re.search(r"person1_bacteria_1\.jpeg 0\.\d+ (PNEUMONIA|NORMAL) 0\.\d+", done.stdout)
