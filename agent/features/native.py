"""The compiled per-packet recurrences (kernel.c), loaded with ctypes when they were built.

``pip install`` compiles kernel.c into ``agent/features/_kernel*.so`` when the machine
has a C compiler (optional: without one the install still succeeds). Without the
library, or with ``IOTGUARD_FEATURES=numpy`` in the environment, the engine uses its
pure numpy path; ``IOTGUARD_FEATURES_LIB=PATH`` loads a library built by hand (the
QEMU tests cross-compile kernel.c for each board that way).
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
SOURCE = HERE / "kernel.c"

KERNEL_ABI = 1  # kernel.c's iotguard_kernel_abi(): raise both whenever a function or a state layout changes

_f64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
_i64 = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
_u8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
_n = ctypes.c_int64


def library_path() -> Path | None:
    """The library to load, or None: IOTGUARD_FEATURES_LIB, else the one built beside this module."""
    if os.environ.get("IOTGUARD_FEATURES_LIB"):
        return Path(os.environ["IOTGUARD_FEATURES_LIB"])
    for suffix in EXTENSION_SUFFIXES:
        if (HERE / f"_kernel{suffix}").exists():
            return HERE / f"_kernel{suffix}"
    return None


@cache
def load() -> ctypes.CDLL | None:
    """The kernel library, or None when it is absent, switched off, or fails to load (logged once)."""
    if os.environ.get("IOTGUARD_FEATURES", "auto") == "numpy":
        return None
    path = library_path()
    if path is None:
        log.debug("no compiled feature kernel: using the numpy engine")
        return None
    try:
        return load_library(path)
    except OSError as exc:
        log.warning("cannot load the feature kernel %s (%s): using the numpy engine", path, exc)
        return None


def load_library(path: Path) -> ctypes.CDLL:
    """Load a built kernel and declare its functions' signatures (OSError when it cannot be loaded)."""
    lib = ctypes.CDLL(str(path))
    lib.iotguard_kernel_abi.restype = ctypes.c_int32
    if lib.iotguard_kernel_abi() != KERNEL_ABI:  # built from another kernel.c: rebuild (pip install -e .)
        raise OSError(f"built for kernel ABI {lib.iotguard_kernel_abi()}, this agent needs {KERNEL_ABI}")
    lib.iotguard_single_update.restype = None
    lib.iotguard_single_update.argtypes = [_n, _f64, _f64, _i64, ctypes.c_int32, _f64, _f64, _f64, _n,
                                           ctypes.c_void_p, _n]
    lib.iotguard_pair_update.restype = None
    lib.iotguard_pair_update.argtypes = [_n, _f64, _f64, _i64, _u8, _u8, _u8, _f64, _f64, _f64, _n,
                                         ctypes.c_void_p, _n]
    return lib


def out_pointer(out: np.ndarray, column: int) -> int:
    """Address of ``out[0, column]`` in a C-contiguous (n, width) float64 array: where a table's columns start."""
    assert out.dtype == np.float64 and out.flags.c_contiguous and 0 <= column < out.shape[1]
    return out.ctypes.data + column * out.itemsize


def backend() -> str:
    """"c" when the compiled kernel is in use, else "numpy" (shown by ``agent doctor``)."""
    return "c" if load() is not None else "numpy"
