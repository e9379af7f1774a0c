"""Small helpers the stages share: stream-key hashing, atomic file writes, returning freed memory,
capability checks.

Each section is independent; none of them knows about packets or the pipeline.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# --- 64-bit hashes of tuples of numpy word arrays: the stream, source and target keys of a batch ---

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Fold one 64-bit word into a running hash (splitmix64 finaliser)."""
    z = (h ^ v.astype(np.uint64, copy=False)) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_words(tag: int, *words: np.ndarray) -> np.ndarray:
    h = np.full(len(words[0]), tag, dtype=np.uint64)
    for w in words:
        h = _mix(h, w)
    return h


# --- Atomic file writes: every state file, so that a crash or power cut leaves the old or the new file ---

TMP_PREFIX = ".tmp-"  # temporary files start with this: a reader of a state directory skips them


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o600) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is fsynced and renamed over ``path``
    and the directory is fsynced (so the rename itself survives a power cut).  On failure (e.g. ENOSPC)
    the temporary file is removed and the old ``path`` stays."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}.{threading.get_ident()}-{path.name}")
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    with atomic_path(path, mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:  # on an almost full disk write() stores only part: a single call would commit a torn file
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


@contextlib.contextmanager
def removed_on_failure(directory: Path) -> Iterator[None]:
    """If the body fails, remove ``directory`` and the parents of it that did not exist before, as long as
    they hold nothing but empty folders (files are never deleted): a start that failed leaves no state
    folder behind that was not there before."""
    directory = Path(directory).absolute()
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        yield
    except BaseException:
        if missing:
            top = missing[-1]  # the outermost folder the body may have created
            for folder, _, _ in os.walk(top, topdown=False):  # children before their parents
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only empty folders go
        raise


# --- Give freed heap memory back to the kernel (glibc keeps it otherwise, and RSS only grows) ---
# The feature stage allocates and frees many medium-sized numpy temporaries per
# batch; glibc's allocator keeps the freed pages in its arenas, so a long run's
# RSS creeps tens of megabytes above what is in use.  ``malloc_trim(0)`` hands
# them back; it costs well under a millisecond, so calling it once a second is free.
_libc = None
try:
    _name = ctypes.util.find_library("c")
    _lib = ctypes.CDLL(_name) if _name else None
    if _lib is not None and hasattr(_lib, "malloc_trim"):
        _libc = _lib
except OSError:  # not glibc (musl, macOS): nothing to trim
    _libc = None


def release_free_memory() -> bool:
    """True when the C library was asked to return free memory."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


# --- Linux capability checks, so that a missing privilege gives a clear error up front ---
# Live capture needs CAP_NET_RAW (AF_PACKET sockets) and nftables enforcement
# needs CAP_NET_ADMIN.  Root has both; an unprivileged service can be given
# exactly these (systemd ``AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN``, or
# ``setcap cap_net_raw,cap_net_admin+ep`` on the interpreter).
# Capability numbers from linux/capability.h, in order (the bit number is the position).
CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

PROC_STATUS = Path("/proc/self/status")


class PrivilegeError(PermissionError):
    """The process lacks a capability it needs; the message says which and how to grant it."""

    def __init__(self, missing: list[str], purpose: str = "") -> None:
        self.missing = list(missing)
        needed = ", ".join(self.missing)
        why = f" (needed {purpose})" if purpose else ""
        grant = " ".join(self.missing)
        super().__init__(
            f"missing capability {needed}{why}: run the agent as root or with that capability, "
            f"e.g. AmbientCapabilities={grant} in its systemd unit, or "
            f"`setcap {','.join(c.lower() for c in self.missing)}+ep` on the Python interpreter"
        )


def capability_bit(name: str) -> int:
    """Bit number of a capability given as ``CAP_NET_RAW``, ``cap_net_raw`` or ``net_raw``."""
    canonical = name.strip().upper()
    if not canonical.startswith("CAP_"):
        canonical = "CAP_" + canonical
    try:
        return CAPABILITY_NAMES.index(canonical)
    except ValueError:
        raise ValueError(f"unknown Linux capability {name!r}") from None


def effective_capabilities(status_path: Path = PROC_STATUS) -> int:
    """The CapEff bit mask of this process (from /proc/self/status)."""
    for line in status_path.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise RuntimeError(f"{status_path} has no CapEff line: cannot check capabilities")


def has_capability(name: str, status_path: Path = PROC_STATUS) -> bool:
    return bool(effective_capabilities(status_path) >> capability_bit(name) & 1)


def missing_capabilities(caps: list[str], status_path: Path = PROC_STATUS) -> list[str]:
    mask = effective_capabilities(status_path)
    return [CAPABILITY_NAMES[capability_bit(c)] for c in caps if not mask >> capability_bit(c) & 1]


def require(caps: list[str], purpose: str = "", status_path: Path = PROC_STATUS) -> None:
    """Raise PrivilegeError naming every capability in ``caps`` that this process lacks."""
    missing = missing_capabilities(caps, status_path)
    if missing:
        raise PrivilegeError(missing, purpose)
