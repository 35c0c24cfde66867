"""examples/quickstart.ipynb runs top to bottom (tiny model, two steps), so it cannot rot."""

import os
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOLAB_NB_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("GRPOLAB_NB_STEPS", "2")
    monkeypatch.setenv("GRPOLAB_NB_EVAL", "4")
    monkeypatch.setenv("GRPOLAB_NB_TOKENS", "8")
    monkeypatch.setenv("GRPOLAB_NB_OUT", str(tmp_path / "runs"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "held-out accuracy" in outputs and "advantage" in outputs and "curves.png" in outputs
    assert list((tmp_path / "runs").glob("*/curves.png"))
