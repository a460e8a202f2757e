"""Sphinx configuration of the minivae course site: ``python -m sphinx -W -b html docs docs/_build/html``.

The lessons are the notebooks in ``notebooks/`` with the outputs stored in them (the test suite executes
them; the site does not), the exercises are the student copies in ``notebooks/exercises/student/``, and the
API reference is read from the package's NumPy-style docstrings. Both sets of notebooks are copied into
``docs/lessons/`` and ``docs/exercises/`` at the start of each build (those folders are not committed), each
exercise with a first cell that says how to grade it.
"""

import json
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))  # the checkout's minivae, whether or not it is installed

import minivae  # noqa: E402

project = "minivae"
author = "the minivae authors"
copyright = "the minivae authors, MIT licence"
release = version = minivae.__version__

extensions = [
    "myst_nb",                 # Markdown pages and notebooks with their stored outputs
    "sphinx.ext.autodoc",      # the API reference, from the docstrings
    "sphinx.ext.napoleon",     # ... which are NumPy-style
    "sphinx.ext.viewcode",     # each documented object links to its source, highlighted
    "sphinx-mathjax-offline",  # MathJax served from the site itself: the pages render offline too
]

nb_execution_mode = "off"                      # the stored outputs; the test suite is what runs the notebooks
nb_mime_priority_overrides = [                 # a live widget needs a kernel: the page shows the static figure
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("html", "application/vnd.jupyter.widget-state+json", None),
]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph is display maths, as Jupyter shows it
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"  # the types beside each parameter's description, not in a long signature
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

html_theme = "sphinx_book_theme"
html_title = "minivae: a VAE by hand"
html_theme_options = {"show_toc_level": 2, "home_page_in_toc": True}
html_context = {"default_mode": "light"}  # without it the theme's script logs an error on a reader's first visit
html_favicon = "favicon.png"  # a 3 from the bundled digits
html_static_path = []
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
suppress_warnings = []

GRADE_NOTE = """\
> **This is exercise {number} of the graded track.** Work in your own copy of the repository's
> `notebooks/exercises/student/{name}` (or {{download}}`download this notebook <{name}>`, and keep it in
> `notebooks/exercises/student/` beside the instructor's copies, which the grader reads), then grade it with
>
> ```
> python -m minivae.grade notebooks/exercises/student/{name}
> ```
>
> See [the exercise track](../exercises.md) for how the grading works.
"""


WIDGET = "application/vnd.jupyter.widget-view+json"


def static(notebook):
    """A notebook as a static page shows it: without its widgets' saved state (a page has no kernel to drive
    them, and showing them would load a widget library from the network), and without the outputs that are
    nothing but a widget (a progress bar, whose text is its state before it ran). An output that carries a
    static view beside its widget keeps it."""
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [out for out in cell["outputs"]
                               if not (WIDGET in out.get("data", {}) and set(out["data"]) <= {WIDGET, "text/plain"})]
    return notebook


def copy_notebooks():
    """Copy the lessons and the student exercises into the site's source, each exercise with its grading note.

    A copy is rewritten only when its content changes, so that Sphinx rebuilds only the pages that changed.
    """
    wanted = {}
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        wanted[DOCS / "lessons" / path.name] = json.dumps(static(json.loads(path.read_text(encoding="utf-8"))),
                                                          indent=1)
    for path in sorted((REPO / "notebooks" / "exercises" / "student").glob("[0-9][0-9]_*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        note = GRADE_NOTE.format(number=int(path.name[:2]), name=path.name)
        title, *rest = notebook["cells"]
        notebook["cells"] = [title, {"cell_type": "markdown", "id": "how-to-grade", "metadata": {},
                                     "source": note.splitlines(keepends=True)}, *rest]
        wanted[DOCS / "exercises" / path.name] = json.dumps(notebook, indent=1)
    for folder in ("lessons", "exercises"):
        (DOCS / folder).mkdir(exist_ok=True)
        for stale in set((DOCS / folder).glob("*.ipynb")) - set(wanted):
            stale.unlink()
    for target, text in wanted.items():
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")


copy_notebooks()
