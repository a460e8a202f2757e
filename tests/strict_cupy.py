"""A strict stand-in for CuPy, so the one-code-path promise is tested on a CPU.

Its arrays wrap NumPy arrays but behave like CuPy's where it matters:

* NumPy refuses them: ``np.exp(a)``, ``np.asarray(a)``, ``numpy_array + a``
  all raise ``TypeError`` (CuPy: "Implicit conversion to a NumPy array is not
  allowed").
* They refuse NumPy arrays: ``a + numpy_array`` or ``module.exp(numpy_array)``
  raise ``TypeError``, as CuPy does. Only ``asarray``/``array`` (an explicit
  host-to-device copy) accept them, and ``asnumpy``/``.get()`` go back.
* Reductions return 0-d device arrays, not host scalars.

Installed as ``sys.modules["cupy"]`` by the ``xp`` fixture, so minivae reaches
it through its ordinary ``import cupy`` and ``get_array_module``.
"""

import operator
import types

import numpy as np


def _refuse_host(a):
    raise TypeError(
        f"strict stand-in: a NumPy array of shape {a.shape} met a device array; "
        "move it explicitly with xp.asarray (CuPy raises here too)"
    )


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _refuse_host(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):  # CuPy reductions give 0-d arrays, not host scalars
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


def _device_call(fn):
    def call(*args, **kwargs):
        return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))

    call.__name__ = getattr(fn, "__name__", "call")
    return call


class ndarray:
    """A device array: a NumPy array that NumPy itself may not touch."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "strict stand-in: implicit conversion to a NumPy array is not allowed; "
            "use .get() or minivae.to_numpy"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise TypeError(f"strict stand-in: numpy.{ufunc.__name__} was called on a device array; use xp = get_array_module(...)")

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(f"strict stand-in: numpy.{func.__name__} was called on a device array; use xp = get_array_module(...)")

    def get(self):
        return self._a.copy()

    def __getattr__(self, name):
        if name.startswith("__"):  # never hand NumPy __array_interface__ and friends
            raise AttributeError(name)
        attr = getattr(self._a, name)
        return _device_call(attr) if callable(attr) else _wrap(attr)

    def __getitem__(self, idx):
        return _wrap(self._a[_unwrap(idx)])

    def __setitem__(self, idx, value):
        self._a[_unwrap(idx)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __repr__(self):
        return f"strict_cupy.{self._a!r}"

    def __dlpack__(self, *args, **kwargs):
        raise TypeError("strict stand-in: no DLPack exchange with NumPy")


def _binary(op):
    return lambda self, other: _wrap(op(self._a, _unwrap(other)))


def _reflected(op):
    return lambda self, other: _wrap(op(_unwrap(other), self._a))


def _inplace(op):
    def method(self, other):
        op(self._a, _unwrap(other))
        return self

    return method


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("pow", operator.pow), ("matmul", operator.matmul), ("mod", operator.mod),
                   ("and", operator.and_), ("or", operator.or_)]:
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _reflected(_op))
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs), ("invert", operator.invert)]:
    setattr(ndarray, f"__{_name}__", (lambda op: lambda self: _wrap(op(self._a)))(_op))
ndarray.__hash__ = None


def _asarray(a, dtype=None, **kwargs):
    if isinstance(a, ndarray):
        return ndarray(np.asarray(a._a, dtype=dtype))
    return ndarray(np.array(a, dtype=dtype, copy=True))  # host -> device copy


def _asnumpy(a, *args, **kwargs):
    return a._a.copy() if isinstance(a, ndarray) else np.asarray(a)


def _wrap_module(numpy_module, name):
    module = types.ModuleType(name)

    def __getattr__(attr_name):
        attr = getattr(numpy_module, attr_name)
        if isinstance(attr, types.ModuleType):
            return _wrap_module(attr, f"{name}.{attr_name}")
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes, constants
        return _device_call(attr)

    module.__getattr__ = __getattr__
    return module


module = _wrap_module(np, "cupy")
module.ndarray = ndarray
module.asarray = module.array = _asarray
module.asnumpy = _asnumpy
module.__version__ = "strict-stand-in"
module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                    Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None))
