"""Score an exercise notebook for self-study: ``python -m minivae.grade NOTEBOOK.ipynb``.

The notebook runs top to bottom in a fresh kernel, in its own folder, and
keeps going past cells that fail; each cell must finish within the time
limit (it is interrupted otherwise, and counts as failed). Every graded part
(a cell with nbgrader metadata ``grade: true`` and ``points``) scores its
points when it runs without an error, and 0 otherwise; the table shows each
part's score and, for a failed one, its error, which for
``minivae.exercises.check`` names the mistake (for a whole model's backward
pass, the wrong gradient nearest the loss, above a line for every gradient). An error in one of your own
cells before a test (a SyntaxError, say) is reported as itself, with its line.
Written answers (Markdown cells that nbgrader grades by hand) are listed
below the table with their points, and not scored.

Locked cells (the tests and the code given to you) are put back as the
instructor's copy has them before the notebook runs, so editing them changes
no score; the report names each cell put back. The instructor's copy is
``../solutions/NAME.ipynb`` beside the ``student`` folder, or ``--reference``.
The notebook file is not changed.

Exit status: 0 for full marks, 1 when some part lost points, 2 when the
notebook cannot be graded. Needs ``nbclient`` and ``ipykernel``
(``pip install "minivae[notebooks]"``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT = 120  # seconds a cell may run
MAX_TIMEOUT = 86400
# The kernel's own log shows errors only: its warning that a local kernel talks over TCP without encryption
# (true of every notebook a student runs on their machine) is about the setup, not the answers.
QUIET_KERNEL = "--IPKernelApp.log_level=ERROR"
GRACE = 5  # seconds a cell has, after the interrupt at its time limit, to stop before its kernel is ended


def check_timeout(value: Any) -> int:
    """A cell's time limit: whole seconds from 1 to ``MAX_TIMEOUT`` (the notebook runner counts whole seconds)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT:
        raise ValueError(f"the time limit is whole seconds from 1 to {MAX_TIMEOUT}; got {value!r}")
    return value


def seconds(text: str) -> int:
    """``--timeout``'s type: the text of whole seconds, checked by :func:`check_timeout`."""
    try:
        return check_timeout(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timeout takes whole seconds from 1 to {MAX_TIMEOUT}; got {text!r}") from None


@dataclass
class PartScore:
    name: str
    points: float
    score: float
    note: str


def graded_cells(nb: Any) -> list[tuple[Any, str, float]]:
    """The code cells nbgrader grades: ``(cell, grade_id, points)``.

    Raises ``ValueError`` naming the cell whose metadata nbgrader could not
    grade either: a grade_id that is not text, points that are not a finite
    number >= 0.
    """
    cells = []
    for i, cell in enumerate(nb.cells):
        meta = _meta(cell)
        if cell.cell_type == "code" and meta.get("grade"):
            name, points = meta.get("grade_id", "?"), meta.get("points", 0)
            if not isinstance(name, str):
                raise ValueError(f"cell {i + 1}'s grade_id must be text; got {name!r}")
            if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 <= points < math.inf:
                raise ValueError(f"cell {i + 1} ({name}) must be worth a finite number of points >= 0; "
                                 f"got {points!r}")
            cells.append((cell, name[len("test_"):] if name.startswith("test_") else name, float(points)))
    return cells


def written_answers(nb: Any) -> list[tuple[str, float]]:
    """The written answers nbgrader leaves to a person: ``(grade_id, points)`` of each graded Markdown answer."""
    return [(_meta(c).get("grade_id", "?"), _meta(c).get("points", 0)) for c in nb.cells
            if c.cell_type == "markdown" and _meta(c).get("grade") and _meta(c).get("solution")]


def first_error(cell: Any) -> str | None:
    """The first error a cell's outputs hold (its message, which may have a table below its first line), or None."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = out.get("evalue", "").strip()
            return f"{out.get('ename', 'Error')}: {value}" if value else out.get("ename", "Error")
    return None


def reference_for(path: Path, reference: str | os.PathLike[str] | None = None) -> Path | None:
    """The instructor's copy of the notebook at ``path``: ``reference``, or ``../solutions/<name>``, or None."""
    if reference is not None:
        return Path(reference)
    candidate = path.resolve().parent.parent / "solutions" / path.name
    return candidate if candidate.is_file() and candidate != path.resolve() else None


def restore_locked(nb: Any, ref: Any) -> list[str]:
    """Put back every locked code cell of ``nb`` that differs from ``ref``'s cell of the same grade_id.

    A graded cell of ``ref`` missing from ``nb`` is put back too, after the
    cell that precedes it in ``ref``. Returns the grade_ids put back.
    """
    mine = {_meta(c).get("grade_id"): c for c in nb.cells if _meta(c).get("grade_id")}
    restored = []
    for i, cell in enumerate(ref.cells):
        meta = _meta(cell)
        if cell.cell_type != "code" or not meta.get("locked") or meta.get("solution"):
            continue
        name, given = meta.get("grade_id"), HIDDEN_TESTS.sub("", cell.source).rstrip("\n")  # as the learner got it
        if name in mine:
            if mine[name].source.rstrip("\n") != given:
                mine[name].source = given
                restored.append(name)
        elif meta.get("grade"):
            before = _meta(ref.cells[i - 1]).get("grade_id") if i else None
            at = next((j + 1 for j, c in enumerate(nb.cells) if _meta(c).get("grade_id") == before), len(nb.cells))
            nb.cells.insert(at, cell.copy())
            nb.cells[at].source = given
            restored.append(name)
    return restored


HIDDEN_TESTS = re.compile(r"\n?[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[^\n]*", re.S)  # the instructor's alone


def _meta(cell):
    """A cell's nbgrader metadata; {} where it has none, or none that nbgrader could read."""
    meta = cell.get("metadata", {})
    meta = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return meta if isinstance(meta, dict) else {}


def _answer_errors(nb):
    """For each graded cell's position, the first error of the learner's own cells since the previous graded cell."""
    errors: dict[int, str | None] = {}
    pending: str | None = None
    for i, cell in enumerate(nb.cells):
        meta = _meta(cell)
        if cell.cell_type != "code":
            continue
        if meta.get("grade"):
            errors[i], pending = pending, None
        elif pending is None and not meta.get("locked"):
            error = first_error(cell)
            if error:
                pending = "your answer cell raised " + re.sub(r"\([^()]*\.py, (line \d+)\)", r"(\1 of that cell)", error)
    return errors


def skip_iri_grammars() -> None:
    """Keep ``nbformat``'s import from compiling grammars that grading never uses (a second or more).

    nbformat validates notebooks with jsonschema, whose format checkers import
    ``rfc3987_syntax`` when it is installed; that package compiles its IRI
    grammars at import. No notebook field has an IRI format, so the grader (a
    process of its own) marks the package absent before importing nbformat.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "not installed"


def grade(path: str | os.PathLike[str], timeout: int = TIMEOUT, kernel_name: str = "python3",
          reference: str | os.PathLike[str] | None = None) -> tuple[list[PartScore], list[str] | None]:
    """Run the notebook at ``path`` in a fresh kernel and score its graded parts.

    Returns ``(scores, restored)``: a list of :class:`PartScore`, and the
    grade_ids of the locked cells put back from the instructor's copy
    (``reference``, by default ``../solutions/<name>``) before running; None
    when there is no instructor's copy to compare with.
    """
    skip_iri_grammars()
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import DeadKernelError
    except ImportError as e:
        raise RuntimeError(f"grading runs the notebook, which needs nbclient and ipykernel ({e}); "
                           'install them with pip install "minivae[notebooks]"') from None
    path = Path(path)
    nb = _read(nbformat, path)
    ref_path = reference_for(path, reference)
    restored = None if ref_path is None else restore_locked(nb, _read(nbformat, ref_path))
    parts = graded_cells(nb)
    if not parts:
        raise ValueError(f"{path} has no graded parts (code cells whose nbgrader metadata says grade: true); "
                         "grade an exercise notebook from notebooks/exercises")
    timeout = check_timeout(timeout)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(path.parent.resolve())}},
                            extra_arguments=[QUIET_KERNEL])
    watchdog = Watchdog(client, timeout + GRACE)
    try:
        client.execute()
    except DeadKernelError:
        if watchdog.ended is None:
            raise RuntimeError("the notebook's kernel died (out of memory?); no part after it could run") from None
    finally:
        watchdog.stop()
    answers = _answer_errors(nb)
    positions = {id(cell): i for i, cell in enumerate(nb.cells)}
    scores = []
    for cell, name, points in parts:
        at = positions[id(cell)]
        error = answers.get(at) or first_error(cell)
        if error and "KeyboardInterrupt" in error:
            error = f"stopped after the {timeout} s time limit"
        if watchdog.ended is not None and at >= watchdog.ended:
            error = (f"its cell ran past the {timeout} s time limit and ignored the interrupt, so the notebook's "
                     "kernel was ended" if at == watchdog.ended else
                     f"not run: cell {watchdog.ended + 1} ran past the time limit and its kernel was ended")
        scores.append(PartScore(name, points, 0.0 if error else points, error or ""))
    return scores, restored


class Watchdog:
    """Ends the notebook's kernel when a cell runs ``limit`` seconds: past its time limit and the interrupt's grace.

    The runner interrupts a cell at its time limit, but a cell can ignore the
    interrupt (``signal.signal(SIGINT, SIG_IGN)``, or a loop in C code), and
    grading would then never end. ``ended`` is the index of the cell whose
    kernel was ended, or None.
    """

    def __init__(self, client: Any, limit: int) -> None:
        self.client, self.limit = client, limit
        self.ended: int | None = None
        self.cell: int | None = None
        self.started: float | None = None
        self.done = threading.Event()
        client.on_cell_execute = self._start  # the cell is sent to the kernel
        client.on_cell_executed = self._complete  # its reply came back
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _start(self, cell, cell_index):
        self.cell, self.started = cell_index, time.monotonic()

    def _complete(self, cell, cell_index, execute_reply=None):
        self.started = None

    def _watch(self):
        while not self.done.wait(0.5):
            started, cell = self.started, self.cell
            if started is not None and time.monotonic() - started > self.limit:
                pid = getattr(getattr(getattr(self.client.km, "provisioner", None), "process", None), "pid", None)
                if pid is not None:
                    self.ended = cell
                    os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def _read(nbformat, path):
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as e:  # nbformat's read errors are ValueErrors
        raise ValueError(f"cannot read {path} as a notebook: {e}") from None
    except Exception as e:  # JSON that is not a notebook at all ({}, [], null) fails inside nbformat
        raise ValueError(f"cannot read {path} as a notebook: it is JSON, but not a notebook's "
                         f"({type(e).__name__}: {e})") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and isinstance(c.get("source", ""), str)
                                              and "cell_type" in c for c in cells):
        raise ValueError(f"cannot read {path} as a notebook: its cells are not a list of cells")
    return nb


def table(scores: Sequence[PartScore]) -> str:
    """The per-part score table and the total, as text."""
    width = max(len("part"), *(len(s.name) for s in scores))
    lines = [f"{'part':<{width}}  score", f"{'-' * width}  -------"]
    for s in scores:
        line = f"{s.name:<{width}}  {s.score:g} / {s.points:g}"
        first, *below = s.note.split("\n")
        lines.append(line + (f"   {first}" if first else ""))
        lines += [" " * (width + 2) + "  " + more for more in below]  # a whole model's table of gradients
    total, most = sum(s.score for s in scores), sum(s.points for s in scores)
    lines += [f"{'-' * width}  -------", f"{'total':<{width}}  {total:g} / {most:g}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minivae.grade", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=seconds, default=TIMEOUT,
                        help=f"whole seconds a cell may run, 1 to {MAX_TIMEOUT} (default {TIMEOUT})")
    parser.add_argument("--reference", type=Path,
                        help="the instructor's copy, whose locked cells are put back (default: ../solutions/NAME)")
    args = parser.parse_args(argv)
    try:
        scores, restored = grade(args.notebook, timeout=args.timeout, reference=args.reference)
    except (RuntimeError, ValueError) as e:
        print(f"minivae.grade: {e}", file=sys.stderr)
        return 2
    if restored is None:
        print("no instructor's copy found (pass --reference): the locked cells were graded as they are")
    elif restored:
        print(f"put back {len(restored)} locked cell(s) as the instructor's copy has them: {', '.join(restored)}")
    print(table(scores))
    import nbformat  # grade() has imported it: grading needs it
    written = written_answers(_read(nbformat, args.notebook))
    if written:
        print(f"not scored here: {len(written)} written answer(s), {sum(p for _, p in written):g} point(s), graded "
              f"by hand: {', '.join(name for name, _ in written)}")
    return 0 if all(s.score == s.points for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main())
