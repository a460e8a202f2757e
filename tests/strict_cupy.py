"""A strict stand-in for CuPy, so the one-code-path promise is tested on a CPU.

Its arrays wrap NumPy arrays but behave like CuPy's where it matters:

* NumPy refuses them: ``np.exp(a)``, ``np.asarray(a)``, ``numpy_array + a``
  all raise ``TypeError`` (CuPy: "Implicit conversion to a NumPy array is not
  allowed").
* They refuse NumPy arrays: ``a + numpy_array`` or ``module.exp(numpy_array)``
  raise ``TypeError``, as CuPy does. Only ``asarray``/``array`` (an explicit
  host-to-device copy) accept them, and ``asnumpy``/``.get()`` go back.
* Reductions return 0-d device arrays, not host scalars.
* ``ElementwiseKernel`` runs a kernel's C body on the host (for the subset
  of C minivae's kernels use; anything else raises).
* ``fuse`` runs the function on the host as one launch, and refuses inside
  it what ``cupy.fuse`` cannot compile into an element-wise kernel:
  reductions, indexing, shapes and other non-ufunc calls.
* ``counts`` tallies kernel launches and device-to-host reads (each read is a
  synchronisation on a GPU), so tests can bound both.

Installed as ``sys.modules["cupy"]`` by the ``backend`` and ``strict`` fixtures, so minivae reaches
it through its ordinary ``import cupy`` and ``get_array_module``.
"""

import functools
import operator
import re
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


class Fusing:
    """Whether a ``fuse``d function is running, during which only element-wise operations are allowed."""

    active = False

    @staticmethod
    def refuse(what):
        raise NotImplementedError(f"strict stand-in: cupy.fuse compiles element-wise operations only; {what} is not one")


class Counts:
    """What the code under test asked of the device; tests ``reset()`` and then read these.

    ``launches``: kernels, one per operation on device arrays. ``transfers``:
    device-to-host reads, each a synchronisation on a GPU.
    """

    launches = 0
    transfers = 0

    @classmethod
    def reset(cls):
        cls.launches = cls.transfers = 0


def _launch(result):
    Counts.launches += 1
    return result


def _transfer(result):
    Counts.transfers += 1
    return result


def _device_call(fn):
    def call(*args, **kwargs):
        if Fusing.active and not isinstance(fn, np.ufunc):
            Fusing.refuse(f"{getattr(fn, '__name__', fn)}()")
        Counts.launches += 1
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
        return _transfer(self._a.copy())

    def __getattr__(self, name):
        if name.startswith("__"):  # never hand NumPy __array_interface__ and friends
            raise AttributeError(name)
        if Fusing.active and name not in ("dtype", "ndim"):
            Fusing.refuse(f"an array's .{name}")
        attr = getattr(self._a, name)
        if name in ("tolist", "item"):
            return lambda *args: _transfer(attr(*args))
        return _device_call(attr) if callable(attr) else _wrap(attr)

    def __getitem__(self, idx):
        if Fusing.active:
            Fusing.refuse("indexing")
        return _launch(_wrap(self._a[_unwrap(idx)]))

    def __setitem__(self, idx, value):
        Counts.launches += 1
        self._a[_unwrap(idx)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __float__(self):
        return _transfer(float(self._a))

    def __int__(self):
        return _transfer(int(self._a))

    def __bool__(self):
        return _transfer(bool(self._a))

    def __repr__(self):
        return f"strict_cupy.{self._a!r}"

    def __dlpack__(self, *args, **kwargs):
        raise TypeError("strict stand-in: no DLPack exchange with NumPy")


def _binary(op):
    return lambda self, other: _launch(_wrap(op(self._a, _unwrap(other))))


def _reflected(op):
    return lambda self, other: _launch(_wrap(op(_unwrap(other), self._a)))


def _inplace(op):
    def method(self, other):
        op(self._a, _unwrap(other))
        return _launch(self)

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
    setattr(ndarray, f"__{_name}__", (lambda op: lambda self: _launch(_wrap(op(self._a))))(_op))
ndarray.__hash__ = None


def _asarray(a, dtype=None, **kwargs):
    if isinstance(a, ndarray):
        return ndarray(np.asarray(a._a, dtype=dtype))
    return ndarray(np.array(a, dtype=dtype, copy=True))  # host -> device copy


def _asnumpy(a, *args, **kwargs):
    return _transfer(a._a.copy()) if isinstance(a, ndarray) else np.asarray(a)


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


class ElementwiseKernel:
    """Runs a CUDA ``ElementwiseKernel`` body on the host, for the small subset of C that minivae's kernels use.

    Statements are ``x = expr;``, ``x op= expr;`` (op one of ``+ - * /``) and
    ``if (a && b) x = expr;``; expressions use arithmetic, comparisons,
    ``sqrt`` and ``fabs``; ``//`` starts a comment. Each statement runs over
    every element at once, which for element-wise code is what the GPU's
    threads do one element each. Arithmetic is NumPy's in the arrays' dtype,
    with each operation rounded on its own, as ``--fmad=false`` makes CUDA do.
    Anything outside the subset raises, so a kernel the stand-in cannot run
    fails its tests instead of passing them untried. Outputs must be passed
    (minivae's kernels update arrays in place) and are written back at the end.
    """

    STATEMENT = re.compile(r"^(?:if \((?P<cond>[^;{}]+)\) )?(?P<name>\w+) (?P<op>[-+*/]?)= (?P<expr>[^;{}=]+)$")

    def __init__(self, in_params, out_params, operation, name="kernel", options=(), **kwargs):
        self.inputs = [p.split()[-1] for p in in_params.split(",")]
        self.outputs = [p.split()[-1] for p in out_params.split(",")]
        self.name, self.options = name, tuple(options)
        self.program = []
        for line in operation.splitlines():
            line = line.split("//")[0].strip()
            if not line:
                continue
            if not line.endswith(";"):
                raise NotImplementedError(f"strict stand-in: kernel {name}: one statement a line, ending in ';': {line!r}")
            match = self.STATEMENT.match(line[:-1].strip())
            if match is None:
                raise NotImplementedError(f"strict stand-in: kernel {name}: statement outside the subset: {line!r}")
            self.program.append(match.groupdict())

    @staticmethod
    def _value(expr, env):
        code = expr.replace("sqrt(", "_np.sqrt(").replace("fabs(", "_np.abs(")
        return eval(code, {"__builtins__": {}, "_np": np}, env)

    def __call__(self, *args):
        if len(args) != len(self.inputs) + len(self.outputs):
            raise TypeError(f"strict stand-in: kernel {self.name} takes {len(self.inputs)} inputs and its "
                            f"{len(self.outputs)} outputs; got {len(args)} arguments")
        arrays = [a for a in args if isinstance(a, ndarray)]
        if any(a._a.shape != arrays[0]._a.shape or a._a.dtype != arrays[0]._a.dtype for a in arrays):
            raise TypeError(f"strict stand-in: kernel {self.name}: arrays of different shapes or dtypes")
        outs = args[len(self.inputs):]
        if not all(isinstance(o, ndarray) for o in outs):
            raise TypeError(f"strict stand-in: kernel {self.name}: outputs must be device arrays")
        env = {name: _unwrap(a).copy() if isinstance(a, ndarray) else a for name, a in zip(self.inputs + self.outputs, args)}
        for s in self.program:
            value = self._value(s["expr"], env)
            if s["op"]:
                value = self._value(f"{s['name']} {s['op']} (__rhs)", {**env, "__rhs": value})
            if s["cond"]:
                cond = [self._value(part.strip(), env) for part in s["cond"].split("&&")]
                value = np.where(functools.reduce(np.logical_and, cond), value, env[s["name"]])
            env[s["name"]] = np.asarray(value, dtype=arrays[0]._a.dtype)
        for name, out in zip(self.outputs, outs):
            out._a[...] = env[name]
        Counts.launches += 1


module.ElementwiseKernel = ElementwiseKernel


def fuse(*args, kernel_name=None):
    """``cupy.fuse``: the function runs on the host, one operation at a time, and counts as one launch.

    Its arguments must be device arrays or scalars, and it must return a device
    array or a tuple of them. Inside it, anything ``cupy.fuse`` cannot compile
    into one element-wise kernel raises (see :class:`Fusing`).
    """
    def decorate(fn):
        def call(*arrays):
            if Fusing.active:
                Fusing.refuse("a fused function called inside another")
            for a in arrays:
                if isinstance(a, np.ndarray):
                    _refuse_host(a)
                if not isinstance(a, (ndarray, int, float, bool, np.generic)):
                    raise TypeError(f"strict stand-in: cupy.fuse takes arrays and scalars, not {type(a).__name__}")
            launches, Fusing.active = Counts.launches, True
            try:
                out = fn(*arrays)
            finally:
                Fusing.active = False
            if not all(isinstance(o, ndarray) for o in (out if isinstance(out, tuple) else (out,))):
                raise TypeError("strict stand-in: a fused function must return device arrays")
            Counts.launches = launches + 1
            return out

        call.__name__ = kernel_name or fn.__name__
        return call

    return decorate(args[0]) if args else decorate


module.fuse = fuse
module.counts = Counts
