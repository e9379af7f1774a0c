"""Only the optional C part of the build; the project's metadata and options live in setup.cfg.

kernel.c is a plain C library (no Python API) that agent/features/native.py loads with ctypes.  It is
optional: without a C compiler the install still succeeds and the feature engine runs on numpy alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "agent.features._kernel",
            sources=["agent/features/kernel.c"],
            extra_compile_args=["-O2"],
            libraries=["m"],
            optional=True,
        )
    ]
)
