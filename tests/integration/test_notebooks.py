"""Every notebook runs top to bottom on a tiny demo store, and is stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# In the order a reader (and this test, sharing one data dir) runs them.
NOTEBOOKS = (
    "01_explore_crm_and_features.ipynb",
    "02_train_and_compare_models.ipynb",
    "03_clv_and_rfm_segments.ipynb",
    "04_explain_a_deal_with_shap.ipynb",
)
TINY = {
    "CRM_PREDICT_NB_CUSTOMERS": "500",
    "CRM_PREDICT_NB_MODELS": "deal_health",
    "CRM_PREDICT_NB_CANDIDATES": "xgboost",
    "CRM_PREDICT_OPTUNA_TRIALS": "2",
    "CRM_PREDICT_MIN_CLASS_COUNT": "5",
    "MPLBACKEND": "Agg",
}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_has_no_outputs(name):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs stored"


def test_every_notebook_in_the_folder_is_tested():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One tiny demo store shared by the notebooks, as when a reader runs them in order."""
    return tmp_path_factory.mktemp("notebooks") / "data"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_a_tiny_store(name, data_dir, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("CRM_PREDICT_DATA_DIR", str(data_dir))
    for key, value in TINY.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    # The kernel inherits this environment; it works in data_dir's parent (MLflow's ./mlruns).
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(data_dir.parent)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
