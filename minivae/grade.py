"""Score an exercise notebook for self-study: ``python -m minivae.grade NOTEBOOK.ipynb``.

The notebook runs top to bottom in a fresh kernel, in its own folder, and
keeps going past cells that fail; each cell must finish within the time
limit (it is interrupted otherwise, and counts as failed). Every graded part
(a cell with nbgrader metadata ``grade: true`` and ``points``) scores its
points when it runs without an error, and 0 otherwise; the table shows each
part's score and, for a failed one, the first line of its error, which for
``minivae.exercises.check`` names the mistake. The notebook file is not
changed.

Exit status: 0 for full marks, 1 when some part lost points, 2 when the
notebook cannot be graded. Needs ``nbclient`` and ``ipykernel``
(``pip install "minivae[notebooks]"``).
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 120  # seconds a cell may run


@dataclass
class PartScore:
    name: str
    points: float
    score: float
    note: str


def graded_cells(nb):
    """The code cells nbgrader grades: ``(cell, grade_id, points)``."""
    cells = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade"):
            name = meta.get("grade_id", "?")
            cells.append((cell, name[len("test_"):] if name.startswith("test_") else name, float(meta.get("points", 0))))
    return cells


def first_error(cell):
    """The first error a cell's outputs hold, as one line, or None."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = out.get("evalue", "").strip().split("\n")[0]
            return f"{out.get('ename', 'Error')}: {value}" if value else out.get("ename", "Error")
    return None


def grade(path, timeout=TIMEOUT, kernel_name="python3"):
    """Run the notebook at ``path`` in a fresh kernel and score its graded parts; a list of :class:`PartScore`."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as e:
        raise RuntimeError(f"grading runs the notebook, which needs nbclient and ipykernel ({e}); "
                           'install them with pip install "minivae[notebooks]"') from None
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as e:  # nbformat's read errors are ValueErrors
        raise ValueError(f"cannot read {path} as a notebook: {e}") from None
    parts = graded_cells(nb)
    if not parts:
        raise ValueError(f"{path} has no graded parts (code cells whose nbgrader metadata says grade: true); "
                         "grade an exercise notebook from notebooks/exercises")
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(path.parent.resolve())}})
    client.execute()
    scores = []
    for cell, name, points in parts:
        error = first_error(cell)
        if error and "KeyboardInterrupt" in error:
            error = f"stopped after the {timeout} s time limit"
        scores.append(PartScore(name, points, 0.0 if error else points, error or ""))
    return scores


def table(scores):
    """The per-part score table and the total, as text."""
    width = max(len("part"), *(len(s.name) for s in scores))
    lines = [f"{'part':<{width}}  score", f"{'-' * width}  -------"]
    for s in scores:
        line = f"{s.name:<{width}}  {s.score:g} / {s.points:g}"
        lines.append(line + (f"   {s.note}" if s.note else ""))
    total, most = sum(s.score for s in scores), sum(s.points for s in scores)
    lines += [f"{'-' * width}  -------", f"{'total':<{width}}  {total:g} / {most:g}"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivae.grade", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds a cell may run (default {TIMEOUT})")
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds; got {args.timeout}")
    try:
        scores = grade(args.notebook, timeout=args.timeout)
    except (RuntimeError, ValueError) as e:
        print(f"minivae.grade: {e}", file=sys.stderr)
        return 2
    print(table(scores))
    return 0 if all(s.score == s.points for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main())
