"""The exercise notebooks, for the tests: their paths, the student generator, and the solutions' functions."""

import importlib.util
from pathlib import Path

import nbformat

from minivae.exercises import PARTS

EXERCISES = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
SOLUTIONS = sorted((EXERCISES / "solutions").glob("*.ipynb"))
# the solutions that test_grade's nbgrader run autogrades (executing every cell, hidden tests and all)
AUTOGRADED = [EXERCISES / "solutions" / "01_backward_passes.ipynb", EXERCISES / "solutions" / "07_find_the_bug.ipynb"]


def load_make_student():
    spec = importlib.util.spec_from_file_location("make_student", EXERCISES / "make_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solved_functions():
    """Part name -> the solution notebooks' function: each notebook's first (import) cell and solution cells, run."""
    solved = {}
    for path in SOLUTIONS:
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        namespace = {}
        for cell in [code[0]] + [c for c in code if c.metadata.get("nbgrader", {}).get("solution")]:
            exec(compile(cell.source, f"{path.name}", "exec"), namespace)
        solved.update({name: fn for name, fn in namespace.items() if name in PARTS})
    return solved
