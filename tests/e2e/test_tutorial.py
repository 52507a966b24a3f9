"""docs/tutorial.ipynb runs top to bottom on the real data, in its quick settings."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # runs the whole tutorial notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
SHARED = (ROOT / ".." / "shared" / "data").resolve()


def test_the_tutorial_notebook_runs_and_shows_its_pictures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PNEUMO_TUTORIAL_DATA", str(SHARED))
    monkeypatch.setenv("PNEUMO_TUTORIAL_OUT", str(tmp_path / "out"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pictures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    # preview, history, confusion matrix, and three heatmaps
    assert len(pictures) == 6
    assert "validation ROC AUC" in text and "children in both train and validation: 0" in text
    assert "largest difference from PyTorch on real images" in text
    assert (tmp_path / "out" / "pneumo.onnx").is_file() and len(list((tmp_path / "out" / "cam").glob("*_cam.png"))) == 3
