"""Every notebook and exercise solution runs top to bottom; student versions are their solutions stripped."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXERCISES = NOTEBOOKS / "exercises"
RUN = sorted(NOTEBOOKS.glob("*.ipynb")) + sorted(EXERCISES.glob("*_solution.ipynb"))


def load_make_student():
    spec = importlib.util.spec_from_file_location("make_student", EXERCISES / "make_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def execute(nb, folder):
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()


def test_the_notebooks_are_all_here():
    names = {p.name for p in RUN}
    assert {"00_autoencoder.ipynb", "01_elbo.ipynb", "02_reparameterization.ipynb", "03_backprop_by_hand.ipynb",
            "04_training_loop.ipynb", "05_train_digits.ipynb", "06_latent_space.ipynb", "07_likelihood.ipynb",
            "08_posterior_collapse.ipynb", "09_gpu.ipynb", "backward_passes_solution.ipynb"} <= names


@pytest.mark.parametrize("path", RUN, ids=lambda p: p.name)
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "committed without outputs"
    execute(nb, path.parent)  # raises CellExecutionError if any cell fails or any check asserts


@pytest.mark.parametrize("solution", sorted(EXERCISES.glob("*_solution.ipynb")), ids=lambda p: p.name)
def test_student_version_is_the_solution_stripped(solution):
    make_student = load_make_student()
    expected = make_student.student_version(nbformat.read(solution, as_version=4))
    student = nbformat.read(make_student.student_path(solution), as_version=4)
    assert [c.cell_type for c in student.cells] == [c.cell_type for c in expected.cells]
    assert [c.source for c in student.cells] == [c.source for c in expected.cells]
    assert not any(c.get("outputs") for c in student.cells if c.cell_type == "code")
    sources = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in sources and "raise NotImplementedError" in sources


def test_strip_solutions_keeps_indentation_and_the_rest():
    strip = load_make_student().strip_solutions
    source = "def f(x):\n    ### BEGIN SOLUTION\n    y = x + 1\n    ### END SOLUTION\n    return y"
    assert strip(source) == "def f(x):\n    raise NotImplementedError\n    return y"
    with pytest.raises(ValueError, match="without"):
        strip("### BEGIN SOLUTION\nx = 1")


def test_the_exercise_checks_catch_a_wrong_answer():
    path = EXERCISES / "backward_passes_solution.ipynb"
    nb = nbformat.read(path, as_version=4)
    wrong = [c for c in nb.cells if "dy * (1 - y**2)" in c.source]
    assert len(wrong) == 1
    wrong[0].source = wrong[0].source.replace("dy * (1 - y**2)", "dy * (1 - y)")  # a plausible mistake
    with pytest.raises(CellExecutionError, match="tanh dx does not match finite differences"):
        execute(nb, path.parent)
