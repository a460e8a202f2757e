"""Write the student version of each exercise: solutions and hidden tests removed, outputs cleared.

``solutions/NN_topic.ipynb`` (the instructor's source, with nbgrader metadata)
becomes ``student/NN_topic.ipynb``. As in nbgrader's ``generate_assignment``,
each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block becomes
``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at the same
indentation, and each ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``
block is dropped; a written answer (a Markdown cell nbgrader grades by hand)
becomes ``YOUR ANSWER HERE``, and its model answer and rubric stay in the
instructor's copy. The nbgrader metadata stays, so ``python -m minivae.grade``
can score the student's notebook.

A learner's work is never overwritten: a student notebook that differs from
what would be written (answers filled in, say) is kept, and the run says so
and fails, unless ``--force`` is given.

    python notebooks/exercises/make_student.py            # solutions/ -> student/
    python notebooks/exercises/make_student.py --out DIR  # somewhere else
    python notebooks/exercises/make_student.py --check    # only say whether student/ is up to date
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOLUTIONS, STUDENT = HERE / "solutions", HERE / "student"
MARKERS = {"### BEGIN SOLUTION": ("### END SOLUTION", ["# YOUR CODE HERE", "raise NotImplementedError()"]),
           "### BEGIN HIDDEN TESTS": ("### END HIDDEN TESTS", [])}
WRITTEN_STUB = "YOUR ANSWER HERE"  # nbgrader's stub for a written answer


def strip_solutions(source):
    """The source with each solution block replaced by a stub and each hidden-test block removed."""
    out, end = [], None
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped in MARKERS:
            if end:
                raise ValueError(f"{stripped!r} inside a block that {end!r} has not closed")
            end, stub = MARKERS[stripped]
            indent = re.match(r"\s*", line).group()
            out += [indent + s for s in stub]
        elif end and stripped == end:
            end = None
        elif stripped in (m for m, _ in MARKERS.values()):
            raise ValueError(f"{stripped!r} without its BEGIN")
        elif not end:
            out.append(line)
    if end:
        raise ValueError(f"a block is not closed by {end!r}")
    return "\n".join(out)


def student_version(solution):
    """A copy of the solution notebook with solutions and hidden tests stripped and all outputs cleared."""
    nb = nbformat.reads(nbformat.writes(solution), as_version=4)  # a deep copy
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = WRITTEN_STUB  # a written answer: the model answer and rubric are the instructor's
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    return nb


def write_all(source=SOLUTIONS, target=STUDENT, force=False, check=False, out=sys.stdout):
    """Write (or with ``check``, compare) every student notebook; returns the paths that were kept or differ."""
    target = Path(target)
    blocked = []
    for path in sorted(Path(source).glob("*.ipynb")):
        text = nbformat.writes(student_version(nbformat.read(path, as_version=4))) + "\n"
        dest = target / path.name
        current = dest.read_text(encoding="utf-8") if dest.exists() else None
        if current == text:
            continue
        if check or (current is not None and not force):
            blocked.append(dest)
            what = "is missing" if current is None else "differs from the exercise as generated"
            print(f"{dest} {what}" + ("" if check else "; kept it (your answers?). Use --force to overwrite, "
                                      "or --out DIR to write elsewhere"), file=out)
            continue
        target.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        print(f"wrote {dest}", file=out)
    return blocked


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=STUDENT, help="folder for the student notebooks (default student/)")
    parser.add_argument("--force", action="store_true", help="overwrite student notebooks that differ")
    parser.add_argument("--check", action="store_true", help="write nothing; fail if any student notebook differs")
    args = parser.parse_args(argv)
    return 1 if write_all(target=args.out, force=args.force, check=args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
