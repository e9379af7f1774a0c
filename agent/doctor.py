"""``python -m agent doctor --profile NAME``: is this board ready to run the agent?

Each check prints ok / warn / FAIL and, when it fails, what to do.  The exit
status is non-zero when any check fails.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config import AgentConfig
from agent.profile import Profile

# Oldest glibc each runtime's wheels need, and the machines they exist for (DESIGN 3).
RUNTIME_WHEELS = {
    "tflite-runtime": ((2, 34), {"x86_64", "aarch64", "armv7l"}),
    "ai-edge-litert": ((2, 27), {"x86_64", "aarch64"}),
}


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "FAIL"
    detail: str
    fix: str = ""


def _glibc() -> tuple[int, int] | None:
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return None
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check_platform(profile: Profile) -> list[Check]:
    machine = platform.machine()
    out = []
    if machine != profile.arch:
        out.append(Check("architecture", "warn", f"this machine is {machine}, the profile describes {profile.arch}",
                         "use the profile of this board"))  # fmt: skip
    else:
        out.append(Check("architecture", "ok", machine))
    runtimes = profile.runtime_preference() if hasattr(profile, "runtime_preference") else [profile.runtime]
    glibc = _glibc()
    for rt in runtimes:
        if rt not in RUNTIME_WHEELS:
            continue
        need, machines = RUNTIME_WHEELS[rt]
        if machine not in machines:
            out.append(Check(f"{rt} wheel", "FAIL", f"no {rt} wheel for {machine}",
                             "armv7 boards use tflite-runtime (see the profile's runtime)"))  # fmt: skip
        elif glibc is not None and glibc < need:
            out.append(Check(f"{rt} wheel", "FAIL", f"glibc {glibc[0]}.{glibc[1]} < {need[0]}.{need[1]} that the wheel needs",
                             "upgrade to Raspberry Pi OS / Debian Bookworm"))  # fmt: skip
        else:
            out.append(Check(f"{rt} wheel", "ok", f"{machine}, glibc {'.'.join(map(str, glibc or ()))}"))
    return out


def check_model(profile: Profile, config: AgentConfig) -> list[Check]:
    from agent.detect.model import BundleError, Classifier, load_bundle

    try:
        bundle = load_bundle(config.model) if config.model else load_bundle()
    except BundleError as exc:
        return [Check("model bundle", "FAIL", str(exc), "reinstall the agent or point `model` in the config at a valid bundle")]
    out = [Check("model bundle", "ok", f"{bundle.version}, {len(bundle.tflite)} bytes")]
    try:
        numpy_major = int(np.__version__.split(".")[0])
        clf = Classifier(bundle, runtime=profile.runtime, batch_size=8)
    except Exception as exc:  # the runtime itself failed to load or to build the interpreter
        fix = "pip install 'numpy<2'" if "numpy" in str(exc).lower() or (numpy_major >= 2 and profile.runtime == "tflite-runtime") else \
            f"pip install {profile.runtime}"  # fmt: skip
        return out + [Check("TFLite runtime", "FAIL", f"{type(exc).__name__}: {exc}", fix)]
    version = ""
    try:
        version = importlib.metadata.version(clf.runtime)
    except importlib.metadata.PackageNotFoundError:
        pass
    out.append(Check("TFLite runtime", "ok", f"{clf.runtime} {version} with numpy {np.__version__}"))
    test = clf.self_test()
    if test is None:
        return out + [Check("model self-test", "warn", "the bundle carries no self-test rows")]
    same_labels, worst = test.same_labels, test.worst_step
    if same_labels and worst <= 1:
        out.append(Check("model self-test", "ok", f"{test.rows} rows, int8 outputs within {worst} step of the build machine"))
    else:
        out.append(Check("model self-test", "FAIL", f"outputs differ from the build machine (labels equal: {same_labels}, worst {worst} steps)",
                         "reinstall the runtime the profile names; report the board if it persists"))  # fmt: skip
    return out


def check_native() -> list[Check]:
    """Whether the compiled kernels run; on the bundled sample they must agree with the numpy paths."""
    from agent import native
    from agent.capture.packets import DecodeStats, PacketBatch
    from agent.detect.model import load_bundle
    from agent.features.columns import COLUMNS
    from agent.features.engine import FeatureExtractor
    from agent.pipeline import SAMPLE_CAPTURE, packets_from_capture

    if native.load() is None:
        return [Check("compiled kernels", "warn", "numpy only: the kernels were not built or are switched off",
                      "install a C compiler (apt install gcc) and reinstall the agent: features and model input "
                      "run several times faster")]  # fmt: skip
    packets = PacketBatch.concat(list(packets_from_capture(SAMPLE_CAPTURE, DecodeStats()))).take(slice(0, 2000))
    fast, slow = FeatureExtractor(backend="c").update(packets), FeatureExtractor(backend="numpy").update(packets)
    cols = [i for i, name in enumerate(COLUMNS) if name.endswith(("_weight", "_mean"))]
    bundle = load_bundle()
    q = bundle.input_q
    same_input = np.array_equal(bundle.preprocessor.quantize(slow, q.scale, q.zero_point),
                                bundle.preprocessor.quantize(slow, q.scale, q.zero_point, backend="numpy"))  # fmt: skip
    if not np.allclose(fast[:, cols], slow[:, cols], rtol=1e-6, atol=1e-9) or not same_input:
        return [Check("compiled kernels", "FAIL", "the compiled kernels disagree with the numpy paths",
                      "set IOTGUARD_NATIVE=off and report the board")]  # fmt: skip
    return [Check("compiled kernels", "ok", f"{native.library_path().name}, agree with the numpy paths")]


def check_system(profile: Profile, interface: str, config: AgentConfig) -> list[Check]:
    from agent.util import missing_capabilities

    out = []
    if Path(f"/sys/class/net/{interface}").exists():
        out.append(Check("interface", "ok", interface))
    else:
        out.append(Check("interface", "FAIL", f"{interface} does not exist", "pass --interface or fix `interface` in the profile"))
    caps = ["CAP_NET_RAW"] + (["CAP_NET_ADMIN"] if profile.enforcement == "nftables" else [])
    missing = missing_capabilities(caps)
    out.append(Check("capabilities", "FAIL" if missing else "ok", f"missing {', '.join(missing)}" if missing else ", ".join(caps),
                     "run via the systemd unit (AmbientCapabilities) or as root" if missing else ""))  # fmt: skip
    if profile.enforcement == "nftables":
        nft = shutil.which("nft")
        if nft is None:
            out.append(Check("nftables", "FAIL", "nft not found", "apt-get install nftables"))
        else:
            res = subprocess.run([nft, "list", "tables"], capture_output=True, text=True)
            ok = res.returncode == 0
            out.append(Check("nftables", "ok" if ok else "FAIL", "nft works" if ok else res.stderr.strip()[:200],
                             "" if ok else "needs CAP_NET_ADMIN and a kernel with nf_tables"))  # fmt: skip
    m = config.mqtt
    if m is None:
        out.append(Check("broker", "warn", "no [mqtt] section: the agent runs alone, no fleet rules or alerts"))
        return out
    try:
        start = time.perf_counter()
        with socket.create_connection((m.host, m.port), timeout=3):
            pass
        out.append(Check("broker", "ok", f"{m.host}:{m.port} reachable in {1000 * (time.perf_counter() - start):.0f} ms"))
    except OSError as exc:
        out.append(Check("broker", "FAIL", f"{m.host}:{m.port}: {exc}", "check the address, the firewall and that the broker runs"))
    out += check_certificates(m)
    return out


def check_certificates(m) -> list[Check]:
    from cryptography import x509

    out = []
    for what, path in (("CA certificate", m.tls_ca), ("device certificate", m.tls_cert)):
        if not path:
            continue
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            out.append(Check(what, "FAIL", f"{path}: {exc}", "regenerate with `python -m controller certs`"))
            continue
        left = (cert.not_valid_after_utc.timestamp() - time.time()) / 86400
        status = "ok" if left > 30 else "warn" if left > 0 else "FAIL"
        out.append(Check(what, status, f"{cert.subject.rfc4514_string()}, expires in {left:.0f} days",
                         "" if status == "ok" else "renew with `python -m controller certs`"))  # fmt: skip
    key = Path(m.controller_public_key)
    out.append(Check("controller key", "ok" if key.is_file() else "FAIL", str(key),
                     "" if key.is_file() else "copy the controller's public key (python -m controller keygen)"))  # fmt: skip
    return out


def check_outputs(config: AgentConfig) -> list[Check]:
    """What the start finds for /metrics (a taken address stops it) and the event log (an unwritable one loses events)."""
    out = []
    if config.metrics is not None:
        listen = config.metrics
        try:
            with socket.socket(socket.AF_INET6 if ":" in listen.host else socket.AF_INET) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server binds
                s.bind((listen.host, listen.port))
            out.append(Check("metrics", "ok", f"http://{listen}/metrics can be served"))
        except (OSError, OverflowError) as exc:
            out.append(Check("metrics", "FAIL", f"{listen}: {getattr(exc, 'strerror', None) or exc}",
                             "choose another address in `metrics` or --metrics, or stop what listens there "
                             "(a running agent holds its own)"))  # fmt: skip
    if config.events is not None:
        folder = Path(config.events.path).absolute().parent
        while not folder.exists() and folder != folder.parent:  # the agent makes missing folders
            folder = folder.parent
        if folder.is_dir() and os.access(folder, os.W_OK):
            out.append(Check("event log", "ok", f"{config.events.path} (rotated at {config.events.max_bytes} bytes, "
                                                f"{config.events.backups} kept)"))  # fmt: skip
        else:
            out.append(Check("event log", "warn", f"{config.events.path}: {folder} is not a writable folder",
                             "events are lost (and counted) until it is; fix `[events] path`"))  # fmt: skip
    return out


def run_doctor(profile: Profile, config: AgentConfig, interface: str | None = None) -> int:
    checks = check_platform(profile) + check_model(profile, config) + check_native() + check_system(profile, interface or profile.interface, config)
    checks += check_outputs(config)
    for c in checks:
        print(f"[{c.status:4s}] {c.name:20s} {c.detail}")
        if c.fix and c.status != "ok":
            print(f"       -> {c.fix}")
    failed = [c for c in checks if c.status == "FAIL"]
    print(f"\n{len(checks)} checks, {len(failed)} failed")
    return 1 if failed else 0
