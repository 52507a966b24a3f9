"""docs/tutorial.ipynb runs top to bottom on the real data, in its quick settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # runs the whole tutorial notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_the_tutorial_notebook_runs_and_shows_its_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user runs it: a kernel started in docs/ (where Jupyter starts it), no settings."""
    for name in ("PNEUMO_TUTORIAL_DATA", "PNEUMO_TUTORIAL_OUT", "PNEUMO_TUTORIAL_FULL"):
        monkeypatch.delenv(name, raising=False)
    out = NOTEBOOK.parent / "tutorial-output"
    shutil.rmtree(out, ignore_errors=True)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pictures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    # preview, history, confusion matrix, and three heatmaps
    assert len(pictures) == 6
    assert "validation ROC AUC" in text and "children in both train and validation: 0" in text
    assert "largest difference from PyTorch on real images" in text
    assert (out / "pneumo.onnx").is_file() and len(list((out / "cam").glob("*_cam.png"))) == 3
    assert "{k: round" not in text and "class weights {'NORMAL'" in text
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out)], cwd=ROOT)
    assert ignored.returncode == 0, "docs/tutorial-output/ must be git-ignored"


def test_the_shipped_tutorial_shows_its_outputs() -> None:
    """Read on GitHub or opened without running, the notebook shows what each step gives."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.outputs for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
