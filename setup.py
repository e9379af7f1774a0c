"""Only the optional C part of the build; the project's metadata and options live in setup.cfg.

agent/native/*.c make a plain C library (no Python API) that agent/native loads with ctypes.  It is optional:
without a C compiler the install still succeeds and the pipeline runs on numpy alone.
"""

from pathlib import Path

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "agent.native._kernels",
            sources=sorted(str(p) for p in Path("agent/native").glob("*.c")),  # as agent.native.SOURCES
            extra_compile_args=["-O2", "-ffp-contract=off"],  # as agent.native.CFLAGS
            libraries=["m"],
            optional=True,
        )
    ]
)
