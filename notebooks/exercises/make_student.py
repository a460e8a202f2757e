"""Write the student version of each exercise notebook: every solution replaced by ``raise NotImplementedError``.

Solutions are marked as nbgrader marks them: the lines between ``### BEGIN SOLUTION``
and ``### END SOLUTION`` (markers included) become one ``raise NotImplementedError``
at the same indentation. Outputs and execution counts are cleared.

    python notebooks/exercises/make_student.py        # X_solution.ipynb -> X.ipynb, beside it
"""

import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HERE = Path(__file__).resolve().parent


def strip_solutions(source):
    """The source with each marked solution block replaced by ``raise NotImplementedError``."""
    out, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r}")
            inside = True
            out.append(re.match(r"\s*", line).group() + "raise NotImplementedError")
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    return "\n".join(out)


def student_version(solution):
    """A copy of the solution notebook with the solutions stripped and all outputs cleared."""
    nb = nbformat.reads(nbformat.writes(solution), as_version=4)  # a deep copy
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    return nb


def student_path(solution_path):
    return Path(str(solution_path).replace("_solution.ipynb", ".ipynb"))


def main(folder=HERE):
    for path in sorted(Path(folder).glob("*_solution.ipynb")):
        target = student_path(path)
        nbformat.write(student_version(nbformat.read(path, as_version=4)), target)
        print(f"wrote {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
