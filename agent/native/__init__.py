"""The optional compiled kernels, plain C loaded with ctypes: the hot loops of two pipeline stages.

* features.c: the per-packet N-BaIoT recurrences (agent/features/engine.py's fast path);
* model_input.c: raw features -> int8 model input (agent/detect/preprocess.py + quantisation).

Each stage declares the signatures of the functions it calls (``function``).  ``pip install`` compiles every
C file here into one library, ``agent/native/_kernels*.so``, when the machine has a C
compiler; the build is optional, and without it (or with ``IOTGUARD_NATIVE=off``) every stage runs its numpy
path, which the tests hold the kernels to.  ``IOTGUARD_NATIVE_LIB=PATH`` loads a library built by hand
(``compile_command``; the QEMU tests cross-compile it for each board that way).  No Python API is used, so
the same files build with any C compiler for any board.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import cache
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SOURCES = tuple(sorted(HERE.glob("*.c")))  # every C file here goes into the one library (setup.py builds the same)
# -ffp-contract=off: no fused multiply-add, so the kernels round exactly as numpy's loops do on every CPU.
CFLAGS = ("-O2", "-ffp-contract=off")
KERNEL_ABI = 2  # iotguard_kernel_abi() in abi.c: raise both whenever a state layout shared with Python changes

# Argument types for the signatures the stages declare (``function``).
f64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
i64 = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
u64 = np.ctypeslib.ndpointer(np.uint64, flags="C_CONTIGUOUS")
u8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
i8 = np.ctypeslib.ndpointer(np.int8, flags="C_CONTIGUOUS")
n, ptr, i32, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32, ctypes.c_float


def compile_command(cc: str, output: Path) -> list[str]:
    """The command that builds the library with compiler ``cc`` (a cross compiler for another board)."""
    return [cc, *CFLAGS, "-fPIC", "-shared", "-Wall", "-o", str(output), *map(str, SOURCES), "-lm"]


def library_path() -> Path | None:
    """The library to load, or None: IOTGUARD_NATIVE_LIB, else the one pip built beside this module."""
    if os.environ.get("IOTGUARD_NATIVE_LIB"):
        return Path(os.environ["IOTGUARD_NATIVE_LIB"])
    for suffix in EXTENSION_SUFFIXES:
        if (HERE / f"_kernels{suffix}").exists():
            return HERE / f"_kernels{suffix}"
    return None


@cache
def load() -> ctypes.CDLL | None:
    """The kernel library, or None when it is absent, switched off, or fails to load (logged once)."""
    if os.environ.get("IOTGUARD_NATIVE", "auto") == "off":
        return None
    path = library_path()
    if path is None:
        log.debug("no compiled kernels: the numpy paths run")
        return None
    try:
        return load_library(path)
    except OSError as exc:
        log.warning("cannot load the compiled kernels %s (%s): the numpy paths run", path, exc)
        return None


def load_library(path: Path) -> ctypes.CDLL:
    """Load a built library (OSError when it cannot be used: not a library, or built from other sources)."""
    lib = ctypes.CDLL(str(path))
    lib.iotguard_kernel_abi.restype = ctypes.c_int32
    if lib.iotguard_kernel_abi() != KERNEL_ABI:  # built from other sources: rebuild (pip install -e .)
        raise OSError(f"built for kernel ABI {lib.iotguard_kernel_abi()}, this agent needs {KERNEL_ABI}")
    return lib


def function(name: str, argtypes: list, restype=None) -> ctypes._CFuncPtr | None:
    """Kernel function ``name`` with its signature declared (next to the code that calls it), or None when
    the library is not loaded or lacks it (built from older sources: logged).  Rename a function whenever its
    signature changes, so that a stale build can never be called with the wrong arguments.  A signature is
    declared once per loaded library, not on each call: the stages ask for their functions on every batch."""
    lib = load()
    if lib is None:
        return None
    declared = lib.__dict__.setdefault("_iotguard_declared", {})  # (not through CDLL.__getattr__: a symbol lookup)
    signature = (tuple(argtypes), restype)
    if name not in declared or declared[name][1] != signature:
        try:
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        except AttributeError:
            _missing(name)
            fn = None
        declared[name] = (fn, signature)
    return declared[name][0]


@cache
def _missing(name: str) -> None:
    log.warning("the compiled kernels lack %s (an older build: pip install -e .): its numpy path runs", name)


def out_pointer(out: np.ndarray, column: int) -> int:
    """Address of ``out[0, column]`` in a C-contiguous (n, width) float64 array: where a table's columns start."""
    assert out.dtype == np.float64 and out.flags.c_contiguous and 0 <= column < out.shape[1]
    return out.ctypes.data + column * out.itemsize


def backend() -> str:
    """"c" when the compiled kernels are in use, else "numpy" (shown by ``agent doctor``)."""
    return "c" if load() is not None else "numpy"
