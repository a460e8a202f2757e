"""The public API carries type annotations an editor can read, and says so with ``py.typed``.

The public API is what the API reference documents: every module with a page in ``docs/api/``, and the
names ``import minivae`` gives. ``python -m mypy`` (run by ``.ci/run``) checks that the annotations hold.
"""

import importlib
import inspect
import pathlib
import re

import pytest

import minivae

REPO = pathlib.Path(__file__).resolve().parent.parent
API_PAGES = REPO / "docs" / "api"


def documented_modules():
    names = [re.search(r"automodule:: (\S+)", page.read_text(encoding="utf-8")).group(1)
             for page in sorted(API_PAGES.glob("*.md")) if page.name != "index.md"]
    return [importlib.import_module(name) for name in names]


def public_callables(module):
    """``(qualified name, function)`` for each public function, class constructor and method the module defines."""
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # imported from elsewhere: checked where it is defined
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(value, (classmethod, staticmethod)):
                    value = value.__func__
                elif isinstance(value, property):
                    value = value.fget
                if inspect.isfunction(value) and value.__qualname__.startswith(f"{obj.__qualname__}."):
                    yield f"{module.__name__}.{name}.{attr}", value  # written in the class (not made by typing)


def unannotated(function):
    """The parameters (and ``return``) of ``function`` that have no annotation."""
    signature = inspect.signature(function)
    missing = [p.name for i, p in enumerate(signature.parameters.values())
               if p.annotation is inspect.Parameter.empty and not (i == 0 and p.name in ("self", "cls"))]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_the_api_reference_covers_the_modules_import_minivae_gives():
    documented = {m.__name__ for m in documented_modules()}
    assert len(documented) >= 20
    given = {f"minivae.{n}" for n in minivae.__all__ if inspect.ismodule(getattr(minivae, n))}
    assert given - documented == set(), "a module import minivae gives has no page in docs/api/"


def test_every_public_function_and_method_is_annotated():
    modules = documented_modules()
    checked, missing = 0, []
    for module in modules:
        for name, function in public_callables(module):
            checked += 1
            gaps = unannotated(function)
            if gaps:
                missing.append(f"{name}: {', '.join(gaps)}")
    for name in minivae.__all__:
        obj = getattr(minivae, name)
        if inspect.isfunction(obj) and unannotated(obj):
            missing.append(f"minivae.{name}: {', '.join(unannotated(obj))}")
    assert checked > 200, checked
    assert not missing, "without annotations:\n" + "\n".join(missing)


def test_the_checker_sees_an_unannotated_function():
    def plain(x, y=1):
        return x

    def typed(x: int, y: int = 1) -> int:
        return x

    assert unannotated(plain) == ["x", "y", "return"] and unannotated(typed) == []


def test_the_package_says_it_is_typed():
    assert (pathlib.Path(minivae.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("name", ["VAE.fit", "VAE.encode", "training.fit"])
def test_an_editor_sees_the_parameters_and_the_result(name):
    owner, _, attr = name.rpartition(".")
    function = getattr(minivae.VAE if owner == "VAE" else minivae.training, attr)
    signature = inspect.signature(function)
    assert "batch_size" in signature.parameters or attr == "encode"
    assert signature.return_annotation is not inspect.Signature.empty
