"""The example notebook runs end to end in a real Jupyter kernel against a real server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import malti_notebook

EXAMPLE = Path(malti_notebook.__file__).parent / "examples" / "analysis.ipynb"


def test_example_notebook_runs_without_errors(seeded, tmp_path, monkeypatch):
    monkeypatch.setenv("MALTI_URL", seeded.url)
    monkeypatch.setenv("MALTI_USER_KEY", seeded.user_keys["viewer"])
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # A kernelspec of this interpreter, so a user-level "python3" kernel elsewhere cannot shadow it.
    spec = tmp_path / "jupyter" / "kernels" / "malti-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "malti test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = nbformat.read(EXAMPLE, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="malti-test", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 2, "the plot helpers' figures are displayed"
    widgets = [output for output in outputs if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    assert widgets, "the dashboard is displayed as a widget"


def test_example_notebook_is_stored_without_outputs():
    notebook = nbformat.read(EXAMPLE, as_version=4)
    nbformat.validate(notebook)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
