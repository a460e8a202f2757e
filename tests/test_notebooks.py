"""Every notebook and exercise solution runs top to bottom; student versions are their solutions stripped."""

import io
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from exercise_notebooks import AUTOGRADED, EXERCISES, SOLUTIONS, load_make_student

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
RUN = sorted(NOTEBOOKS.glob("*.ipynb")) + SOLUTIONS


def execute(nb, folder):
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()


def test_the_notebooks_are_all_here():
    names = {p.name for p in RUN}
    assert {"00_autoencoder.ipynb", "01_elbo.ipynb", "02_reparameterization.ipynb", "03_backprop_by_hand.ipynb",
            "04_training_loop.ipynb", "05_train_digits.ipynb", "06_latent_space.ipynb", "07_likelihood.ipynb",
            "08_posterior_collapse.ipynb", "09_gpu.ipynb", "10_iwae.ipynb", "11_compression.ipynb", "12_conditional.ipynb", "13_planar_flows.ipynb",
            "14_learned_priors.ipynb", "15_semi_supervised.ipynb", "16_two_stochastic_layers.ipynb",
            "01_backward_passes.ipynb", "07_find_the_bug.ipynb", "12_two_layers.ipynb"} <= names


def autograded_elsewhere(path):
    """The solutions that test_grade's nbgrader run executes in full (hidden tests and all) and scores at full marks."""
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        return False
    return path in AUTOGRADED


@pytest.mark.parametrize("path", RUN, ids=lambda p: p.name)
def test_notebook_runs(path):
    if autograded_elsewhere(path):
        pytest.skip("run in full by nbgrader's autograde in test_grade.py, which requires full marks")
    nb = nbformat.read(path, as_version=4)
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "committed without outputs"
    execute(nb, path.parent)  # raises CellExecutionError if any cell fails or any check asserts


def test_student_versions_are_the_solutions_stripped(tmp_path):
    make_student = load_make_student()
    assert make_student.write_all(target=tmp_path, out=io.StringIO()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in SOLUTIONS]
    for solution in SOLUTIONS:
        expected = nbformat.read(solution, as_version=4)
        student = nbformat.read(tmp_path / solution.name, as_version=4)
        assert [c.metadata.get("nbgrader") for c in student.cells] == [c.metadata.get("nbgrader") for c in expected.cells]
        assert not any(c.get("outputs") for c in student.cells if c.cell_type == "code")
        sources = "\n".join(c.source for c in student.cells)
        assert "BEGIN SOLUTION" not in sources and "HIDDEN TESTS" not in sources
        stubs = sum(c.metadata["nbgrader"]["solution"] for c in student.cells if c.cell_type == "code")
        assert sources.count("raise NotImplementedError()") == stubs > 0
        written = [c for c in student.cells if c.cell_type == "markdown" and c.metadata["nbgrader"]["solution"]]
        assert all(c.source == "YOUR ANSWER HERE" for c in written) and "Rubric" not in sources


def test_the_committed_student_folder_holds_every_exercise():
    # names only: a learner may have filled these in, and that must not fail the tests
    assert sorted(p.name for p in (EXERCISES / "student").glob("*.ipynb")) == [p.name for p in SOLUTIONS]


def test_regenerating_never_overwrites_a_learners_answers(tmp_path):
    make_student = load_make_student()
    quiet = io.StringIO()
    make_student.write_all(target=tmp_path, out=quiet)
    mine = tmp_path / SOLUTIONS[0].name
    nb = nbformat.read(mine, as_version=4)
    nb.cells[-1].source += "\n# my notes"
    nbformat.write(nb, mine)
    answered = mine.read_bytes()
    assert make_student.write_all(target=tmp_path, out=quiet) == [mine]
    assert mine.read_bytes() == answered
    assert make_student.write_all(target=tmp_path, check=True, out=quiet) == [mine]
    assert make_student.write_all(target=tmp_path, force=True, out=quiet) == []
    assert mine.read_bytes() != answered
    assert make_student.write_all(target=tmp_path, check=True, out=quiet) == []


def test_the_generator_refuses_as_a_command_and_says_why(tmp_path):
    make_student = load_make_student()
    make_student.write_all(target=tmp_path, out=io.StringIO())
    (tmp_path / SOLUTIONS[0].name).write_text("my answers")
    done = subprocess.run([sys.executable, str(EXERCISES / "make_student.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "kept it" in done.stdout and "--force" in done.stdout
    assert (tmp_path / SOLUTIONS[0].name).read_text() == "my answers"


def test_strip_solutions_keeps_indentation_and_the_rest():
    strip = load_make_student().strip_solutions
    source = "def f(x):\n    ### BEGIN SOLUTION\n    y = x + 1\n    ### END SOLUTION\n    return y"
    assert strip(source) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n    return y"
    assert strip("check(1)\n### BEGIN HIDDEN TESTS\ncheck(2)\n### END HIDDEN TESTS") == "check(1)"
    for bad in ("### BEGIN SOLUTION\nx = 1", "### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS"):
        with pytest.raises(ValueError):
            strip(bad)


def test_every_planted_bug_still_matches_the_library(tmp_path):
    """notebooks/mutations.py plants each bug by replacing one line; a line the library no longer has plants nothing."""
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import mutations
    finally:
        sys.path.remove(str(NOTEBOOKS))
    for i, bug in enumerate(mutations.BUGS):
        folder = tmp_path / str(i)
        folder.mkdir()
        mutations.plant(bug, folder)  # raises when the correct line is not in the source exactly once
        assert bug[3] in (folder / "minivae" / bug[1]).read_text()
    assert set(mutations.UNTAUGHT) <= {bug[0] for bug in mutations.BUGS}  # each untaught bug is one of them
