"""Firmware profiles: what the agent may use on one board (DESIGN 8).

A profile is a TOML file; the shipped ones are package data in ``firmware_profiles/`` (one per
board), so a normal install, an editable one and a source checkout all find them.  The schema
below is declared once as data (key, type, default, meaning); ``load_profile``
checks a file against it and raises ``ProfileError`` naming the file, the key
and the problem, so that a typo in a profile stops the agent at start-up
instead of misbehaving on the board.

    profile = load_profile("rpi-zero-2w")        # firmware_profiles/rpi-zero-2w.toml
    profile = load_profile("/etc/iotguard/board.toml")
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from agent.detect.model import INFER_BATCH
from agent.features.engine import ENTRY_BYTES, Budgets
from agent.validate import Check, Field, Invalid, fields, instance_of

# Where bare profile names are looked up (override: IOTGUARD_PROFILE_DIR): the firmware_profiles package's data, found
# through importlib.resources so that it is wherever pip put the package.  The agent is installed as plain
# files (never zipped: it needs its model and profiles as files), so the traversable is a real directory.
PROFILE_DIR = Path(str(resources.files("firmware_profiles")))

REQUIRED = object()  # marks a key without default


@dataclass(frozen=True)
class Key:
    """One key of the profile schema."""

    name: str
    type: type  # int, str or dict (a sub-table)
    default: Any = REQUIRED
    meaning: str = ""


SCHEMA: tuple[Key, ...] = (
    Key("name", str, meaning="profile name, equal to the file name without .toml"),
    Key("description", str, "", "the board and the OS it runs"),
    Key("arch", str, meaning="CPU architecture as platform.machine() reports it: aarch64, armv7l, x86_64"),
    Key("cores", int, meaning="CPU cores"),
    Key("memory_mb", int, meaning="RAM of the board"),
    Key("runtime", str, meaning="TFLite runtime: ai-edge-litert, tflite-runtime, tensorflow or auto"),
    Key("threads", int, 1, "TFLite interpreter threads"),
    Key("interface", str, meaning="capture interface, e.g. eth0"),
    Key("batch_size", int, meaning="packets per pipeline batch"),
    Key("budgets", dict, meaning="entries per stream table (a [budgets] table)"),
    Key("memory_budget_mb", int, meaning="resident memory the agent may use"),
    Key("capture_ring_kb", int, 4096, "AF_PACKET ring size in KiB, a multiple of 256 (the block size)"),
    Key("enforcement", str, meaning="filter backend: nftables or none"),
    Key("qemu", str, meaning="QEMU user-mode binary for the board's tests, or none (native)"),
    Key("qemu_cpu", str, "", "QEMU CPU model closest to the board (qemu -cpu)"),
)

STREAM_TABLES = tuple(ENTRY_BYTES)  # the [budgets] keys
BASELINE_MB = 60  # Python + numpy + a TFLite runtime + the model, measured 40-60 MB
MAX_BATCH = 1 << 20
LOAD_BATCH_FACTOR = 8  # under load a pipeline batch grows to this many times the profile's batch_size
MAX_BUDGET = 1 << 32  # entries per stream table: a terabyte; beyond it the memory estimate overflows a float
RING_BLOCK_KB = 256  # AF_PACKET ring block: the ring is a whole number of these

# What each architecture can run: TFLite runtimes with wheels for it and the QEMU binaries that emulate it.
ARCH_RUNTIMES: dict[str, tuple[str, ...]] = {
    "aarch64": ("ai-edge-litert", "tflite-runtime", "tensorflow"),
    "armv7l": ("tflite-runtime",),  # neither ai-edge-litert nor tensorflow ships armv7 wheels
    "x86_64": ("ai-edge-litert", "tflite-runtime", "tensorflow"),
}
ARCH_QEMU: dict[str, tuple[str, ...]] = {
    "aarch64": ("qemu-aarch64-static", "qemu-aarch64"),
    "armv7l": ("qemu-arm-static", "qemu-arm"),
    "x86_64": ("none",),
}
ENFORCEMENT = ("nftables", "none")


class ProfileError(Exception):
    """A profile file is missing or invalid: ``path``, ``key`` and ``problem`` say where and why."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = Path(path), key, problem
        where = f"key '{key}'" if key else "file"
        super().__init__(f"{path}: {where}: {problem}")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    arch: str
    cores: int
    memory_mb: int
    runtime: str
    threads: int
    interface: str
    batch_size: int
    budgets: Budgets
    memory_budget_mb: int
    capture_ring_kb: int
    enforcement: str
    qemu: str | None  # None: runs natively, no emulation
    qemu_cpu: str
    path: Path

    def runtime_preference(self) -> tuple[str, ...]:
        """Runtimes to try, best first ("auto" means every runtime this architecture has)."""
        return ARCH_RUNTIMES[self.arch] if self.runtime == "auto" else (self.runtime,)

    @property
    def infer_batch(self) -> int:
        """Rows per interpreter call: one pipeline batch, up to the classifier's own batch."""
        return min(INFER_BATCH, self.batch_size)

    @property
    def max_batch(self) -> int:
        """Packets per pipeline batch under load: the ring hands over what arrived since the last round, and
        up to LOAD_BATCH_FACTOR batches' worth go through at once (each stage costs a little per batch: at
        256 packets a batch that overhead held a Pi Zero 2 W's profile to a quarter of its rate)."""
        return min(MAX_BATCH, self.batch_size * LOAD_BATCH_FACTOR)

    def estimated_memory_mb(self) -> float:
        """Rough resident size with full stream tables: baseline + tables + a batch of features."""
        batch_mb = self.max_batch * 115 * 8 * 4 / 2**20  # float64 features and a few temporaries
        return BASELINE_MB + self.budgets.estimated_mb() + batch_mb


def profile_path(path_or_name: str | os.PathLike) -> Path:
    """A bare name (no slash, no .toml) means a shipped profile: firmware_profiles/NAME.toml."""
    text = os.fspath(path_or_name)
    if "/" not in text and not text.endswith(".toml"):
        base = Path(os.environ.get("IOTGUARD_PROFILE_DIR") or PROFILE_DIR)
        return base / f"{text}.toml"
    return Path(text)


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped with the agent."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(path_or_name: str | os.PathLike) -> Profile:
    path = profile_path(path_or_name)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        known = ", ".join(shipped_profiles()) or "none"
        raise ProfileError(path, "", f"no such profile (shipped profiles: {known})") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(path, "", f"cannot read TOML: {exc}") from None
    values = _check_schema(path, data)
    budgets = _check_budgets(path, values.pop("budgets"))
    qemu = values.pop("qemu")
    profile = Profile(**values, budgets=budgets, qemu=None if qemu == "none" else qemu, path=path)
    _check_values(profile)
    return profile


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", dict: "table", list: "array"}.get(
        type(value), type(value).__name__
    )


def _of_type(expected: type) -> Check:
    # TOML booleans are Python bools, which are ints too: instance_of refuses them.
    return instance_of(expected, {int: "an integer", str: "a string", dict: "a table"}[expected], _type_name)


def _check_type(path: Path, key: str, value: Any, expected: type) -> None:
    try:
        _of_type(expected)(value)
    except Invalid as exc:
        raise ProfileError(path, key, exc.reason) from None


def _check_schema(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    table = [Field(k.name, _of_type(k.type), required=k.default is REQUIRED, default=k.default) for k in SCHEMA]
    try:
        return fields(data, table, refuse_unknown=True)
    except Invalid as exc:
        if exc.unknown:  # the first in the file
            known = ", ".join(sorted(k.name for k in SCHEMA))
            raise ProfileError(path, exc.unknown[0], f"unknown key (known keys: {known})") from None
        if exc.missing:
            meaning = next(k.meaning for k in SCHEMA if k.name == exc.missing)
            raise ProfileError(path, exc.missing, f"missing ({meaning})") from None
        raise ProfileError(path, exc.path[0], exc.reason) from None


def _check_budgets(path: Path, table: dict[str, Any]) -> Budgets:
    for key in table:
        if key not in STREAM_TABLES:
            raise ProfileError(path, f"budgets.{key}", f"unknown stream table (known: {', '.join(STREAM_TABLES)})")
    for key in STREAM_TABLES:
        name = f"budgets.{key}"
        if key not in table:
            raise ProfileError(path, name, "missing (entries for this stream table)")
        _check_type(path, name, table[key], int)
        if table[key] < 1:
            raise ProfileError(path, name, f"must be at least 1 entry, got {table[key]}")
        if table[key] > MAX_BUDGET:
            raise ProfileError(path, name, f"must be at most {MAX_BUDGET} entries, got {table[key]}")
    return Budgets(**{k: table[k] for k in STREAM_TABLES})


def _check_values(p: Profile) -> None:
    """Values that are well-typed but impossible, or inconsistent with each other."""

    def fail(key: str, problem: str) -> None:
        raise ProfileError(p.path, key, problem)

    if p.name != p.path.stem:
        fail("name", f"{p.name!r} differs from the file name {p.path.stem!r}")
    if p.arch not in ARCH_RUNTIMES:
        fail("arch", f"unknown architecture {p.arch!r} (known: {', '.join(ARCH_RUNTIMES)})")
    if p.cores < 1:
        fail("cores", f"must be at least 1, got {p.cores}")
    if p.memory_mb < 64:
        fail("memory_mb", f"must be at least 64 MB, got {p.memory_mb}")
    allowed = ARCH_RUNTIMES[p.arch]
    if p.runtime != "auto" and p.runtime not in allowed:
        if p.runtime in ARCH_RUNTIMES["x86_64"]:
            fail("runtime", f"{p.runtime!r} is not available for {p.arch} (available: {', '.join(allowed)}, auto)")
        fail("runtime", f"unknown runtime {p.runtime!r} (choose from ai-edge-litert, tflite-runtime, tensorflow, auto)")
    if not 1 <= p.threads <= p.cores:
        fail("threads", f"must be between 1 and cores ({p.cores}), got {p.threads}")
    if not p.interface:
        fail("interface", "must not be empty")
    if not 1 <= p.batch_size <= MAX_BATCH:
        fail("batch_size", f"must be between 1 and {MAX_BATCH}, got {p.batch_size}")
    if p.memory_budget_mb < 1:
        fail("memory_budget_mb", f"must be positive, got {p.memory_budget_mb}")
    if p.memory_budget_mb > p.memory_mb:
        fail("memory_budget_mb", f"{p.memory_budget_mb} MB is more than the board's memory_mb ({p.memory_mb} MB)")
    need = p.estimated_memory_mb()
    if need > p.memory_budget_mb:
        fail(
            "memory_budget_mb",
            f"{p.memory_budget_mb} MB is too small for these budgets and batch size "
            f"(about {need:.0f} MB: {BASELINE_MB} MB baseline + {p.budgets.estimated_mb():.0f} MB stream tables); "
            "raise it or lower the [budgets]",
        )
    if p.capture_ring_kb < RING_BLOCK_KB or p.capture_ring_kb % RING_BLOCK_KB:
        fail("capture_ring_kb", f"must be a positive multiple of {RING_BLOCK_KB}, got {p.capture_ring_kb}")
    if p.enforcement not in ENFORCEMENT:
        fail("enforcement", f"unknown backend {p.enforcement!r} (choose from {', '.join(ENFORCEMENT)})")
    qemu = p.qemu or "none"
    if qemu not in ARCH_QEMU[p.arch]:
        fail("qemu", f"{qemu!r} does not run {p.arch} (use {' or '.join(ARCH_QEMU[p.arch])})")
    if p.qemu is None and p.qemu_cpu:
        fail("qemu_cpu", "set, but qemu is none")
