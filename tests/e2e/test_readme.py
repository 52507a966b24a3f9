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
DOCS = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}  # the pages the README links to


def _commands() -> dict[str, Any]:
    """Every command by its full name ("predict", "data summary")."""
    found: dict[str, Any] = {}

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):  # a group (typer ships its own click)
            if getattr(cmd, "invoke_without_command", False):  # `pneumo models` runs on its own too
                found[prefix] = cmd
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = cmd

    walk(typer.main.get_command(app), "")
    return found


def _readme_commands() -> list[str]:
    """`pneumo ...` as the README and its docs pages write it: in inline code, and in their shell blocks."""
    text = "\n".join([README, *DOCS.values()])
    inline = re.findall(r"`(pneumo [^`]+)`", text)
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S))
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


def test_the_readme_is_short_and_links_every_page() -> None:
    """A newcomer's page: the two commands, the first hour, the commands; the rest is in docs/."""
    assert len(README.splitlines()) < 400
    for name in DOCS:
        assert f"(docs/{name})" in README, f"the README does not link docs/{name}"
    for link in re.findall(r"\]\(([^)#]+)", README + "".join(DOCS.values())):
        if not link.startswith("http"):
            assert (ROOT / link).exists() or (ROOT / "docs" / link).exists(), f"a link to {link}, which does not exist"


@pytest.mark.slow  # trains a quick run
def test_the_readme_python_runs_as_written(tmp_path: Path) -> None:
    """From a project folder with ../shared/data beside it, as the README assumes."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for code in blocks:
        done = subprocess.run(  # third-party warnings aside, a deprecated pneumo call in the README is an error
            [sys.executable, "-W", "error::DeprecationWarning:__main__", "-c", code],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    assert (project / "runs" / "quick" / "val_report.json").is_file()
    assert re.search(r"person1_bacteria_1\.jpeg 0\.\d+ (PNEUMONIA|NORMAL) 0\.\d+", done.stdout)
