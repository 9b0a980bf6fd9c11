"""The Colab quickstart runs top to bottom (tiny configuration) and prints what it promises."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


def _text(cell) -> str:
  out = []
  for o in cell.get("outputs", []):
    if o.get("output_type") == "stream":
      out.append(o.get("text", ""))
    elif "data" in o:
      out.append(o["data"].get("text/plain", ""))
  return "".join(out)


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None


def test_install_cell_finds_the_checkout_from_the_notebooks_folder():
  # Opened in Jupyter from notebooks/ of a checkout: the first code cell moves to the
  # repository root (where `configs` imports from) and installs nothing.
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nb.cells = [next(c for c in nb.cells if c.cell_type == "code")]
  nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
  assert _text(nb.cells[0]).strip() == f"working in {os.path.basename(ROOT)}"


def test_quickstart_notebook_runs_in_tiny_mode(monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  monkeypatch.setenv("LSKILL_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  # The kernel is a child process: it inherits the environment and the working directory.
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

  text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
  assert "backbone: 2 layers, hidden 64" in text
  assert "adapter: rank 2" in text
  assert "without the skill:" in text and "with the skill:" in text
  assert "composed adapter: rank 4 = 2 + 2" in text
  assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code"
             for o in c.outputs), "the α plot was not drawn"
  line = next(l for l in text.splitlines() if l.startswith("PyTorch PEFT vs lskill_jax"))
  assert float(line.rsplit(":", 1)[1]) < 1e-3, line
