"""Grading: ``python -m minivae.grade`` for self-study, and the real nbgrader's generate and autograde steps."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from minivae import grade

from exercise_notebooks import AUTOGRADED as SOLVED
from exercise_notebooks import EXERCISES, SOLUTIONS, load_make_student

BACKWARD = EXERCISES / "solutions" / "01_backward_passes.ipynb"
WRONG_TANH = ("    return dy - dy * y * y   # d tanh(x)/dx = 1 - tanh(x)^2 = 1 - y^2", "    return dy * (1 - y)")


def solution_sources(path):
    """grade_id -> source of each solution cell."""
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(path, as_version=4).cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def half_done(tmp_path):
    """The student version of exercise 1 with dense_backward and kl_backward solved and tanh_backward wrong."""
    nb = load_make_student().student_version(nbformat.read(BACKWARD, as_version=4))
    solved = solution_sources(BACKWARD)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in ("dense_backward", "kl_backward"):
            cell.source = solved[gid]
        elif gid == "tanh_backward":
            cell.source = solved[gid].replace(*WRONG_TANH)
    path = tmp_path / "01_backward_passes.ipynb"
    nbformat.write(nb, path)
    return path


def run_grade(*args):
    return subprocess.run([sys.executable, "-m", "minivae.grade", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # runs notebooks in fresh kernels
def test_a_solution_gets_full_marks():
    done = run_grade(BACKWARD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].split() == ["total", "5", "/", "5"]
    assert "WARNING" not in done.stderr, done.stderr  # the kernel's warning about TCP is not the student's concern


@pytest.mark.slow  # runs notebooks in fresh kernels
def test_a_half_done_notebook_is_scored_part_by_part(tmp_path):
    path = half_done(tmp_path)
    before = path.read_bytes()
    done = run_grade(path)
    assert done.returncode == 1
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "1 / 1" in rows["dense_backward"] and "1 / 1" in rows["kl_backward"]
    assert "0 / 1" in rows["tanh_backward"] and "tanh'(x) was written as 1 - y" in rows["tanh_backward"]
    assert "0 / 1" in rows["sample_backward"] and "not written yet" in rows["sample_backward"]
    assert rows["total"].split()[1:] == ["2", "/", "5"]
    assert path.read_bytes() == before, "grading must not change the learner's file"


@pytest.mark.slow  # runs notebooks in fresh kernels
def test_edited_tests_are_put_back_and_an_answers_own_error_is_reported(tmp_path):
    nb = load_make_student().student_version(nbformat.read(BACKWARD, as_version=4))
    solved = solution_sources(BACKWARD)
    kept = []
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "test_dense_backward":
            cell.source = "pass"  # a test made harmless, over an unwritten answer
        elif gid == "tanh_backward":
            cell.source = solved[gid].replace("def tanh_backward(dy, y):", "def tanh_backward(dy, y)")  # no colon
        elif gid == "kl_backward":
            cell.source = solved[gid]
        if gid != "test_kl_backward":  # a test deleted, under a right answer
            kept.append(cell)
    nb.cells = kept
    path = tmp_path / "01_backward_passes.ipynb"
    nbformat.write(nb, path)
    done = run_grade(path, "--reference", BACKWARD)
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "put back 2 locked cell(s)" in done.stdout and "test_dense_backward" in done.stdout
    assert "0 / 1" in rows["dense_backward"] and "not written yet" in rows["dense_backward"]
    assert "1 / 1" in rows["kl_backward"]  # its test, put back, passes
    assert "0 / 1" in rows["tanh_backward"]
    assert "your answer cell raised SyntaxError" in rows["tanh_backward"] and "line 1 of that cell" in rows["tanh_backward"]


@pytest.mark.slow  # runs notebooks in fresh kernels
def test_a_cell_past_the_time_limit_loses_its_part_and_grading_goes_on(tmp_path):
    nb = nbformat.v4.new_notebook()
    meta = lambda gid: {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1, "grade_id": gid,
                                     "schema_version": 3}}
    # sleeping loops, which the runner's interrupt ends as it ends a busy one, without using the CPU meanwhile
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.05)"
    nb.cells = [nbformat.v4.new_code_cell("import time\nwhile True:\n    time.sleep(0.05)", metadata=meta("forever")),
                nbformat.v4.new_code_cell("assert 1 + 1 == 2", metadata=meta("quick")),
                nbformat.v4.new_code_cell(stubborn, metadata=meta("stubborn")),  # ignores the interrupt
                nbformat.v4.new_code_cell("assert 1 + 1 == 2", metadata=meta("after"))]
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    done = run_grade(path, "--timeout", "3")  # run_grade itself fails the test past its own limit
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "0 / 1" in rows["forever"] and "time limit" in rows["forever"]
    assert "1 / 1" in rows["quick"]
    assert "0 / 1" in rows["stubborn"] and "ignored the interrupt, so the notebook's kernel was ended" in rows["stubborn"]
    assert "0 / 1" in rows["after"] and "not run" in rows["after"] and done.returncode == 1


def test_what_cannot_be_graded_is_one_line(tmp_path, capsys):
    plain = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), plain)
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    for path, message in ((plain, "no graded parts"), (broken, "cannot read"), (tmp_path / "none.ipynb", "cannot read")):
        assert grade.main([str(path)]) == 2  # refused before a kernel starts
        assert message in capsys.readouterr().err
    done = run_grade(broken)  # and as a command, without a traceback
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("content, message", [
    ("{}", "not a notebook's"), ("[]", "not a notebook's"), ("null", "not a notebook's"),
    ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 3}', "cannot read"),
])
def test_json_that_is_not_a_notebook_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "odd.ipynb"
    path.write_text(content)
    assert grade.main([str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("nbgrader_meta, message", [
    ({"grade": True, "grade_id": 7, "points": 1}, "grade_id must be text; got 7"),
    ({"grade": True, "grade_id": "a", "points": None}, "finite number of points >= 0; got None"),
    ({"grade": True, "grade_id": "a", "points": float("nan")}, "got nan"),
    ({"grade": True, "grade_id": "a", "points": -1}, "got -1"),
    ({"grade": True, "grade_id": "a", "points": float("inf")}, "got inf"),
    ("a string", "no graded parts"), (["a", "list"], "no graded parts"),
])
def test_nbgrader_metadata_that_cannot_be_graded_is_named(tmp_path, capsys, nbgrader_meta, message):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", metadata={"nbgrader": nbgrader_meta})])
    path = tmp_path / "meta.ipynb"
    nbformat.write(nb, path)
    assert grade.main([str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["2.5", "inf", "1e-9", "0", "-3", "nan"])
def test_a_timeout_that_is_not_whole_seconds_is_a_usage_error(capsys, timeout):
    with pytest.raises(SystemExit) as done:
        grade.main([str(BACKWARD), "--timeout", timeout])
    assert done.value.code == 2 and "--timeout takes whole seconds from 1 to" in capsys.readouterr().err
    with pytest.raises(ValueError, match="whole seconds"):
        grade.grade(BACKWARD, timeout=2.5)


def test_written_answers_are_listed_with_their_points_and_not_scored():
    nb = nbformat.v4.new_notebook()
    meta = lambda gid, **more: {"nbgrader": {"grade": True, "grade_id": gid, "points": 1, "schema_version": 3, **more}}
    nb.cells = [nbformat.v4.new_code_cell("check()", metadata=meta("test_part", solution=False, locked=True)),
                nbformat.v4.new_markdown_cell("YOUR ANSWER HERE", metadata=meta("written_why", solution=True,
                                                                                locked=False, points=2)),
                nbformat.v4.new_markdown_cell("The question.", metadata=meta("text", grade=False, solution=False))]
    assert grade.written_answers(nb) == [("written_why", 2)]
    assert [name for _, name, _ in grade.graded_cells(nb)] == ["part"]  # only the code cell is scored here


def test_the_table_adds_up():
    scores = [grade.PartScore("a", 1, 1, ""), grade.PartScore("bb", 2, 0, "ExerciseFailed: wrong")]
    text = grade.table(scores)
    assert text.splitlines()[-1].split() == ["total", "1", "/", "3"] and "ExerciseFailed: wrong" in text
    table = grade.table([grade.PartScore("whole", 1, 0, "ExerciseFailed: w2 is wrong\nEvery gradient:\n  w1  right")])
    rows = table.splitlines()
    assert rows[2].endswith("ExerciseFailed: w2 is wrong") and rows[3].strip() == "Every gradient:" \
        and rows[3].startswith(" " * len("whole  ")) and rows[4].strip() == "w1  right", table


# ---------------------------------------------------------------- the real nbgrader
def nbgrader(course, *args):
    # nbgrader runs its database migrations with the ``alembic`` command, installed beside this Python; a
    # sitecustomize spares it (and its alembic) the IRI grammars that minivae.grade skips (grade.skip_iri_grammars)
    site = course / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys\nsys.modules.setdefault('rfc3987_syntax', None)\n")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_nbgrader_generates_the_assignment_and_autogrades_it(tmp_path):
    pytest.importorskip("nbgrader", reason="nbgrader is part of the test extra: pip install -e '.[test]'")
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    source = course / "source" / "exercises"
    source.mkdir(parents=True)
    for path in SOLUTIONS:
        shutil.copy(path, source)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'minivae'\n"
        "c.CourseDirectory.db_assignments = [dict(name='exercises')]\n"
        "c.CourseDirectory.db_students = [dict(id='solved'), dict(id='planted')]\n"
        "c.ExecutePreprocessor.timeout = 300\n")
    nbgrader(course, "generate_assignment", "exercises", "--force")

    # the release has no solutions and no hidden tests
    for path in SOLUTIONS:
        text = (course / "release" / "exercises" / path.name).read_text()
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "raise NotImplementedError()" in text
        assert "Rubric" not in text  # written answers' model answers and rubrics stay in the source
    assert "YOUR ANSWER HERE" in (course / "release" / "exercises" / "08_objectives.ipynb").read_text()

    # two submissions: two solved notebooks (every solution runs clean in test_notebooks, hidden tests and all,
    # which is what autograde scores), and one solved notebook with one planted wrong answer
    (course / "submitted" / "solved" / "exercises").mkdir(parents=True)
    for path in SOLVED:
        shutil.copy(source / path.name, course / "submitted" / "solved" / "exercises")
    (course / "submitted" / "planted" / "exercises").mkdir(parents=True)
    planted = course / "submitted" / "planted" / "exercises" / BACKWARD.name
    shutil.copy(source / BACKWARD.name, planted)
    nb = nbformat.read(planted, as_version=4)
    [cell] = [c for c in nb.cells if WRONG_TANH[0] in c.source]
    cell.source = cell.source.replace(*WRONG_TANH)
    nbformat.write(nb, planted)
    nbgrader(course, "autograde", "exercises", "--force")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        def grades(student, notebooks=SOLUTIONS):
            out = {}
            for path in notebooks:
                sub = gb.find_submission_notebook(path.stem, "exercises", student)
                out.update({g.name: (g.score, g.max_score) for g in sub.grades})
            return out

        solved, planted_grades = grades("solved", SOLVED), grades("planted", [BACKWARD])
    assert len(solved) >= 6 and all(score == most for score, most in solved.values())
    lost = {name for name, (score, most) in planted_grades.items() if score != most}
    assert lost == {"test_tanh_backward"}
    assert planted_grades["test_tanh_backward"][0] == 0
