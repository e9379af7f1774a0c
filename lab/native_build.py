"""Test fixtures for the compiled kernels (agent/native): build the library from this checkout's sources, and
point the agent at it (or at any other library file) for one test.

    def test_x(compiled): ...                       # the agent loads the library just built
    def test_y(native_library, monkeypatch): ...    # its path, to switch by hand (``use_library``)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent import native


def c_compiler() -> str:
    """The C compiler, or skip (.ci/run installs gcc)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (.ci/run installs gcc)")
    return cc


def build(source_files: list[Path] | None, output: Path, cc: str | None = None) -> Path:
    """Compile ``source_files`` (default: every agent/native/*.c, with the agent's own flags) into ``output``."""
    cc = cc or c_compiler()
    if source_files is None:
        command = native.compile_command(cc, output) + ["-Werror"]
    else:
        command = [cc, "-fPIC", "-shared", "-o", str(output), *map(str, source_files)]
    subprocess.run(command, check=True)
    return output


def use_library(monkeypatch, path: Path | None) -> None:
    """Load ``path`` from now on (None: no compiled kernels at all, the numpy paths)."""
    if path is None:
        monkeypatch.setenv("IOTGUARD_NATIVE", "off")
    else:
        monkeypatch.setenv("IOTGUARD_NATIVE_LIB", str(path))
        monkeypatch.delenv("IOTGUARD_NATIVE", raising=False)
    native.load.cache_clear()
    native._missing.cache_clear()


@pytest.fixture(scope="session")
def native_library(tmp_path_factory) -> Path:
    """The library compiled from this checkout's agent/native/*.c (so no stale build is ever tested)."""
    return build(None, tmp_path_factory.mktemp("native") / "kernels.so")


@pytest.fixture
def compiled(native_library, monkeypatch):
    """The agent loads the library just compiled (backend "c" / "auto")."""
    use_library(monkeypatch, native_library)
    yield native_library
    native.load.cache_clear()
