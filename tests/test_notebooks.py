"""The notebooks run top to bottom (tiny settings), and they are stored without outputs.

Each notebook reads `THAWKIT_NOTEBOOK_TINY=1` in its first (parameters) cell and shrinks every
run to seconds: timm's tiny test network with random weights, 32 px images, a few batches.
That proves the code of every cell runs against today's thawkit; the numbers mean nothing.
The kernel is the Python running the tests (ipykernel's `python3` kernel maps to it), with this
checkout's `src/` first on its path.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# Each notebook and the figures it shows at least (curves, confusion matrix, plots).
EXPECTED = {"01_quickstart": 3, "02_strategies": 3, "03_batchnorm_and_imbalance": 1}


def test_the_notebooks_exist() -> None:
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs. Store notebooks without outputs: "
        f"`nbstripout {path.relative_to(REPO)}` (or `nbstripout --install` once, as a git filter)"
    )
    params = nb.cells[1] if len(nb.cells) > 1 else None
    assert params is not None and "parameters" in params.metadata.get("tags", []), (
        f"{path.name}: the second cell must be the parameters cell (tag 'parameters')"
    )
    assert "THAWKIT_NOTEBOOK_TINY" in params.source


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory: pytest.TempPathFactory):
    """Environment of the kernels: tiny mode, outputs and the digits export in a temp dir."""
    base = tmp_path_factory.mktemp("notebooks")
    env = {
        "THAWKIT_NOTEBOOK_TINY": "1",
        "THAWKIT_NOTEBOOK_OUT": str(base / "out"),
        # One digits export for the three notebooks, outside the user's cache.
        "THAWKIT_DATA": str(base / "data"),
        "THAWKIT_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        # One intra-op thread: the tiny runs gain nothing from more, and the machine is shared.
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "agg",
        "HYDRA_FULL_ERROR": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# The quickstart runs in the default suite; the other two (~70 s together on 2 cores) are `slow`
# (`make test-all`), which keeps the default suite near its ~10 minute budget.
RUN_BY_DEFAULT = {"01_quickstart"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=() if p.stem in RUN_BY_DEFAULT else pytest.mark.slow)
        for p in NOTEBOOKS
    ],
    ids=lambda p: p.stem,
)
def test_notebook_runs_top_to_bottom(path: Path, notebook_env: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell and traceback
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert images >= EXPECTED[path.stem], f"{path.name} showed {images} figures"
