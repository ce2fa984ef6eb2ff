"""Executes every notebook in notebooks/ end to end on the current backend (CPU in CI) with nbclient; a
cell that raises (each notebook asserts what it shows) fails the test. The notebooks run in a fresh
kernel with notebooks/ as the working directory, as a user would run them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_collected():
    assert [p.stem for p in NOTEBOOKS][:4] == ["01_ops", "02_layer", "03_generation", "04_results"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat/nbclient/ipykernel are test dependencies (make test installs them)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is a test dependency (make test installs it)")
    pytest.importorskip("ipykernel", reason="ipykernel is a test dependency (make test installs it)")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:  # the failing cell's source and traceback
        pytest.fail(f"{path.name}: a cell failed:\n{e}", pytrace=False)
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    assert all(c.get("outputs") is not None for c in nb.cells if c.cell_type == "code")
