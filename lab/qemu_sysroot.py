"""ARM Python sysroots for QEMU user-mode tests (DESIGN 3), built once and cached.

No chroot, binfmt or debootstrap: Debian's ARM ``python3.11`` packages are
downloaded with a private apt configuration and unpacked with ``dpkg -x``; the
ARM wheels (numpy, the TFLite runtime) are installed from PyPI by the host's
pip into ``SYSROOT/opt/site``; the ARM interpreter then runs as

    PYTHONPATH=SYSROOT/opt/site:REPO qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11 ...

Sysroots live in ``${IOTGUARD_CACHE:-~/.cache/iotguard}/qemu/<target>/sysroot``.
A build writes ``complete.json`` (the recipe it followed) only when it has
finished and passed a smoke check; a changed recipe rebuilds.  A lock file
keeps parallel test processes from building the same target twice.

``EmulationUnavailable`` means the machine cannot emulate (no QEMU binary,
Debian mirror or PyPI unreachable with nothing cached): tests skip with its
message.  Any other failure of a build is a real error.

    python -m lab.qemu_sysroot [TARGET ...]    # build (or check) sysroots by hand
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger("qemu_sysroot")

from lab import REPO

PYTHON_VERSION = "3.11"
RECIPE_VERSION = 1  # bump when the build steps change in a way the recipe fields do not show


@dataclass(frozen=True)
class Target:
    """One emulated board userland: Debian packages + ARM wheels + the QEMU that runs them."""

    name: str
    deb_arch: str  # Debian architecture
    machine: str  # platform.machine() inside the emulator
    qemu: str  # QEMU user-mode binary
    qemu_cpu: str  # the oldest core among the profiled boards of this architecture
    wheel_arch: str  # manylinux platform suffix
    debs: tuple[str, ...]  # Debian packages (their dependencies come along)
    wheels: tuple[str, ...]  # pip requirements, ARM wheels only
    wheel_deps: bool  # False when numpy comes from Debian and must not be pulled from PyPI
    runtime: str  # TFLite runtime name as agent.detect.model.RUNTIMES spells it


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "aarch64-tflite", "arm64", "aarch64", "qemu-aarch64-static", "cortex-a53", "aarch64",
            ("python3.11", "libstdc++6"), ("tflite-runtime==2.14.0", "numpy>=1.24,<2"), True, "tflite-runtime",
        ),
        Target(
            "aarch64-litert", "arm64", "aarch64", "qemu-aarch64-static", "cortex-a53", "aarch64",
            ("python3.11", "libstdc++6"), ("ai-edge-litert==2.3.*", "numpy>=1.24"), True, "ai-edge-litert",
        ),
        # No numpy wheel exists for armv7 on PyPI: Debian's python3-numpy (1.24, armhf) instead.
        Target(
            "armv7-tflite", "armhf", "armv7l", "qemu-arm-static", "cortex-a8", "armv7l",
            ("python3.11", "python3-numpy", "libstdc++6"), ("tflite-runtime==2.14.0",), False, "tflite-runtime",
        ),
    )
}

_RUNTIME_MODULE = {"tflite-runtime": "tflite_runtime.interpreter", "ai-edge-litert": "ai_edge_litert.interpreter"}

# Output of apt or pip that means "the network or the mirror", not "the recipe is wrong".
_UNREACHABLE = re.compile(
    r"Temporary failure resolving|Could not resolve|Failed to establish a new connection|NewConnectionError|"
    r"Network is unreachable|Connection refused|Connection timed out|Read timed out|ConnectTimeout|"
    r"No route to host|Could not connect|Name or service not known|Max retries exceeded|Mirror sync in progress|Hash Sum mismatch",
    re.I,
)


class EmulationUnavailable(RuntimeError):
    """This machine cannot run the emulated target; the message says why (tests skip with it)."""


class SysrootBuildError(RuntimeError):
    """A sysroot build failed for a reason other than missing network or QEMU."""


# Once the network has failed, later builds in this process fail at once instead of retrying again.
_offline: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("IOTGUARD_CACHE") or Path.home() / ".cache" / "iotguard") / "qemu"


def target_for(machine: str, runtime: str) -> str | None:
    """The target that emulates a board of this architecture with this runtime (None: no such target)."""
    for t in TARGETS.values():
        if t.machine == machine and t.runtime == runtime:
            return t.name
    return None


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown QEMU target {name!r} (known: {', '.join(TARGETS)})") from None


def wheel_requirements(target: Target) -> list[str]:
    """The target's wheels, with the TFLite runtime pinned to the host's version when the host has one.

    Then the x86_64 comparisons measure the architecture, not a difference between runtime releases
    (int8 rounding differs by one step between releases in places).
    """
    reqs = []
    for req in target.wheels:
        name = re.split(r"[=<>!~; ]", req, maxsplit=1)[0]
        try:
            host = importlib.metadata.version(name) if name in _RUNTIME_MODULE else None
        except importlib.metadata.PackageNotFoundError:
            host = None
        reqs.append(f"{name}=={host}" if host else req)
    return reqs


def recipe(target: Target) -> dict:
    """Everything that decides a sysroot's content: a change here rebuilds it."""
    suites = sorted({suite for _, suite, _ in debian_sources()})
    full = {"recipe_version": RECIPE_VERSION, "python": PYTHON_VERSION, "suites": suites, **asdict(target)}
    full["wheels"] = wheel_requirements(target)
    return json.loads(json.dumps(full))  # as complete.json will hold it (tuples become lists)


# ---------------------------------------------------------------- public API


def ensure_sysroot(target_name: str) -> Path:
    """The finished sysroot of a target, building it first if needed (seconds when cached)."""
    global _offline
    target = get_target(target_name)
    if shutil.which(target.qemu) is None:
        raise EmulationUnavailable(f"{target.qemu} not found: install it with `apt-get install qemu-user-static`")
    home = cache_dir() / target.name
    want = recipe(target)
    if _is_complete(home, want):
        return home / "sysroot"
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home.parent / f"{target.name}.lock"):
        if _is_complete(home, want):  # another process built it while we waited
            return home / "sysroot"
        if _offline:
            raise EmulationUnavailable(_offline)
        started = time.monotonic()
        try:
            _build(target, home, want)
        except EmulationUnavailable as exc:
            _offline = f"{exc} (found building {target.name})"
            raise
        log.info("built %s sysroot in %.1f s", target.name, time.monotonic() - started)
    return home / "sysroot"


def python_command(target_name: str, argv: list[str], sysroot: Path | None = None, cpu: str | None = None) -> list[str]:
    target = get_target(target_name)
    sysroot = sysroot or ensure_sysroot(target_name)
    python = str(sysroot / "usr/bin/python3.11")
    return [target.qemu, "-cpu", cpu or target.qemu_cpu, "-L", str(sysroot), python, *argv]


def python_env(sysroot: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The host environment minus its Python settings, with the sysroot's site and the repository on the path."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QEMU_"))}
    base.update(
        PYTHONPATH=f"{sysroot / 'opt/site'}:{REPO}",  # host paths: qemu -L maps only what exists in the sysroot
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",  # leave the repository's __pycache__ to the host interpreter
        PYTHONUTF8="1",
    )
    base.update(env or {})
    return base


def run_python(
    target_name: str,
    argv: list[str],
    cwd: str | os.PathLike = REPO,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    cpu: str | None = None,
) -> subprocess.CompletedProcess:
    """Run the target's ARM python3.11 under QEMU with ``argv``; output is captured as text.

    ``cpu`` picks another QEMU CPU model (a firmware profile's ``qemu_cpu``) than the target's default.
    """
    sysroot = ensure_sysroot(target_name)
    return subprocess.run(
        python_command(target_name, argv, sysroot, cpu),
        cwd=cwd,
        env=python_env(sysroot, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_native(
    argv: list[str], cwd: str | os.PathLike = REPO, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """The same command with the host's (x86_64) interpreter, for comparison with ``run_python``."""
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full.update(PYTHONPATH=str(REPO), PYTHONUTF8="1", **(env or {}))
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- cache bookkeeping


def _is_complete(home: Path, want: dict) -> bool:
    try:
        done = json.loads((home / "complete.json").read_text())
    except (OSError, ValueError):
        return False
    return done.get("recipe") == want and (home / "sysroot/usr/bin/python3.11").exists()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(target: Target, home: Path, want: dict) -> None:
    (home / "complete.json").unlink(missing_ok=True)
    partial = home / "sysroot.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    timings = {}
    t0 = time.monotonic()
    for deb in _download_debs(target, home / "apt"):
        _run(["dpkg", "-x", str(deb), str(partial)], f"unpacking {deb.name}")
    timings["debs_s"] = round(time.monotonic() - t0, 1)
    _fix_up(partial)
    t0 = time.monotonic()
    _install_wheels(target, partial / "opt/site")
    timings["wheels_s"] = round(time.monotonic() - t0, 1)
    # Debian's packages ship no bytecode (postinst makes it); compile once here so each
    # emulated run does not recompile the standard library.  The 3.11 .pyc format is the same on every arch.
    libs = [str(p) for p in (partial / "usr/lib/python3.11", partial / "usr/lib/python3/dist-packages") if p.exists()]
    proc = subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *libs], capture_output=True, text=True)
    if proc.returncode != 0:  # a file that does not compile costs speed, not correctness
        log.warning("compileall: %s", (proc.stdout + proc.stderr)[-500:])
    _smoke_check(target, partial)
    shutil.rmtree(home / "sysroot", ignore_errors=True)
    partial.rename(home / "sysroot")
    marker = home / "complete.json.tmp"
    marker.write_text(json.dumps({"recipe": want, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **timings}, indent=1))
    marker.replace(home / "complete.json")


# ---------------------------------------------------------------- Debian packages


def debian_sources() -> list[list[str]]:
    """(URI, suite, components) of the host's Debian sources, so ARM packages come from the same suites and mirror.

    Reads one-line ``.list`` files and deb822 ``.sources`` files; falls back to
    the release in /etc/os-release on deb.debian.org.
    """
    found: list[list[str]] = []
    etc = Path("/etc/apt")
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in files:
        for line in _read_lines(path):
            m = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line)
            if m:
                found.append([m[1], m[2], " ".join(m[3].split())])
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in _deb822(path):
            if "deb" not in stanza.get("Types", "").split() or stanza.get("Enabled", "yes") == "no":
                continue
            for uri in stanza.get("URIs", "").split():
                for suite in stanza.get("Suites", "").split():
                    found.append([uri, suite, " ".join(stanza.get("Components", "main").split())])
    debian = [s for s in found if "debian" in s[0]]  # leave out third-party repositories
    if debian:
        return debian
    codename = "bookworm"
    for line in _read_lines(Path("/etc/os-release")):
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip('"') or codename
    return [["http://deb.debian.org/debian", codename, "main"]]


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError:
        return []


def _deb822(path: Path) -> list[dict[str, str]]:
    stanzas, current, last = [], {}, None
    try:
        text = path.read_text()
    except OSError:
        return []
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
        elif line.startswith("#"):
            continue
        elif line[0].isspace() and last:
            current[last] += " " + line.strip()
        elif ":" in line:
            last, value = line.split(":", 1)
            current[last] = value.strip()
    return stanzas


def _apt_options(deb_arch: str, apt: Path) -> list[str]:
    """A private apt: its own architecture, sources, lists, status and cache; nothing of the host's state."""
    opts = {
        "APT::Architecture": deb_arch,
        "APT::Architectures::": deb_arch,
        "APT::Install-Recommends": "false",
        "APT::Sandbox::User": "root",  # the private dirs are not readable by _apt
        "Dir::State::Lists": apt / "lists",
        "Dir::State::Status": apt / "status",
        "Dir::Cache": apt / "cache",
        "Dir::Etc::SourceList": apt / "sources.list",
        "Dir::Etc::SourceParts": apt / "empty.d",
        "Dir::Etc::Preferences": apt / "empty.pref",
        "Dir::Etc::PreferencesParts": apt / "empty.d",
        "Dir::Log": apt / "log",
    }
    return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]


def _download_debs(target: Target, apt: Path) -> list[Path]:
    for sub in ("lists/partial", "cache/archives/partial", "empty.d", "log"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").write_text("")  # an empty system: apt fetches every dependency
    (apt / "empty.pref").write_text("")
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    signed = f" signed-by={keyring}" if Path(keyring).exists() else ""
    sources = debian_sources()
    (apt / "sources.list").write_text(
        "".join(f"deb [arch={target.deb_arch}{signed}] {uri} {suite} {comps}\n" for uri, suite, comps in sources)
    )
    opts = _apt_options(target.deb_arch, apt)
    _apt_update(opts, apt, n_sources=sum(len(comps.split()) for _, _, comps in sources))
    archives = apt / "cache/archives"
    for old in archives.glob("*.deb"):
        old.unlink()
    cmd = ["apt-get", *opts, "install", "-y", "-q", "--download-only", *target.debs]
    out = _retrying(cmd, "downloading Debian packages")
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise SysrootBuildError(f"apt downloaded no packages for {target.debs}:\n{out[-2000:]}")
    return debs


def _apt_update(opts: list[str], apt: Path, n_sources: int) -> None:
    """apt-get update, retried while the mirror is mid-sync; a suite that keeps failing is left out with a warning.

    apt-get exits 0 when it cannot connect at all (only warnings), so success is judged by the lists it left.
    """
    for attempt in range(3):
        proc = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
        have = len(list((apt / "lists").glob("*_Packages*")))
        if proc.returncode == 0 and have >= n_sources:
            return
        log.warning("apt-get update (attempt %d): %s", attempt + 1, _errors(proc))
        if proc.returncode != 0 and not _UNREACHABLE.search(proc.stdout + proc.stderr):
            raise SysrootBuildError(f"apt-get update failed: {_errors(proc)}")
        if attempt < 2:
            time.sleep(2 * (attempt + 1))
    if have == 0:
        raise EmulationUnavailable(f"Debian mirror unreachable and no package lists cached: {_errors(proc)}")
    log.warning("continuing with the package lists that did download (%d of %d)", have, n_sources)


def _errors(proc: subprocess.CompletedProcess) -> str:
    """The lines of apt or pip output that say what went wrong, on one line."""
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith(("E:", "W:", "ERROR"))] or lines[-5:]
    cause = [ln for ln in lines if _UNREACHABLE.search(ln) and ln not in errs][:1]
    return " | ".join(errs[:4] + cause)


def _retrying(cmd: list[str], what: str, attempts: int = 3) -> str:
    for attempt in range(attempts):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout
        text = proc.stdout + proc.stderr
        if not _UNREACHABLE.search(text):
            raise SysrootBuildError(f"{what} failed: {_errors(proc)}")
        log.warning("%s (attempt %d): %s", what, attempt + 1, _errors(proc))
        if attempt < attempts - 1:
            time.sleep(2 * (attempt + 1))
    raise EmulationUnavailable(f"{what}: network or mirror unavailable: {_errors(proc)}")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SysrootBuildError(f"{what} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def _fix_up(root: Path) -> None:
    # What maintainer scripts would have done, as far as the tests need it.
    # 1. update-alternatives links for the reference BLAS/LAPACK (Debian's numpy links to libblas.so.3).
    for lib in ("blas/libblas.so.3", "lapack/liblapack.so.3"):
        for real in root.glob(f"usr/lib/*/{lib}"):
            link = real.parent.parent / real.name
            if not link.exists():
                link.symlink_to(Path(real.parent.name) / real.name)
    # 2. cpuinfo (inside the TFLite runtimes) reads /sys/devices/system/cpu; the host's lists make
    #    ai-edge-litert crash under QEMU.  Empty files make it fall back to one processor.
    cpu = root / "sys/devices/system/cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present"):
        (cpu / name).write_text("")


# ---------------------------------------------------------------- wheels


def _platforms(arch: str) -> list[str]:
    # pip does not widen an explicit --platform to older glibc tags: list them (Bookworm has glibc 2.36).
    return [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)] + [f"manylinux2014_{arch}"]


def _install_wheels(target: Target, site: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-script-location"]
    cmd += ["--target", str(site), "--only-binary=:all:", "--implementation", "cp", "--abi", "cp311"]
    cmd += ["--python-version", PYTHON_VERSION]
    for p in _platforms(target.wheel_arch):
        cmd += ["--platform", p]
    cache = os.environ.get("IOTGUARD_CACHE")
    if cache:
        cmd += ["--cache-dir", str(Path(cache) / "pip")]
    if not target.wheel_deps:
        cmd.append("--no-deps")
    reqs = wheel_requirements(target)
    _retrying(cmd + reqs, f"installing {', '.join(reqs)} for {target.wheel_arch}")


def _smoke_check(target: Target, root: Path) -> None:
    code = f"import platform, numpy; import {_RUNTIME_MODULE[target.runtime]}; print(platform.machine())"
    proc = subprocess.run(
        python_command(target.name, ["-c", code], root), env=python_env(root), capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0 or proc.stdout.strip() != target.machine:
        raise SysrootBuildError(
            f"{target.name}: the new sysroot's python does not work (exit {proc.returncode}):\n"
            f"{proc.stdout[-1000:]}{proc.stderr[-2000:]}"
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in sys.argv[1:] or list(TARGETS):
        t0 = time.monotonic()
        try:
            path = ensure_sysroot(name)
        except EmulationUnavailable as exc:
            print(f"{name}: unavailable: {exc}")
            continue
        print(f"{name}: {path} ({time.monotonic() - t0:.1f} s)")
