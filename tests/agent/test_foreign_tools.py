"""Real attack tools against a board in network namespaces: does ``python -m agent detect`` see them?

Our own synthesiser writes attacks the way we think they look; these tests use the tools attackers use.
What is real here: nmap, hping3, masscan, ab, curl, hydra, slowhttptest and THC-IPv6 (the Debian packages) build
and send their own packets from an attacker namespace over a veth pair; the board namespace's kernel answers as a
board would (an HTTP/1.1 web server on 80, a telnet login on 23 that refuses every password, an SSDP service on
UDP 1900 answering each M-SEARCH three times, the rest reset, one echo replier in a /24 of absent hosts behind the
board); tcpdump captures on the board's side of the link, as the agent would; ``python -m agent detect --jsonl``
judges the capture in a separate process.  Nothing in the packets comes from this file.

Each attack is recorded once (a module-scoped, parametrised fixture) and checked three ways:
``test_attack_is_reported``: a verdict names the attacker (or, for spoofed sources, the board as the
flood's target) less than 1 s after the attacker's first packet; ``test_attack_is_named``: the first verdict
that names it has the attack's class, in time; ``test_board_is_not_accused``: the victim's answers do not convict it.
Known gaps are xfails saying what the tool sent and why it is missed: strict where the miss showed in
every run, so the day a rule catches it the xfail fails and gets removed; not strict where it varies.

Bounds: every tool stops by itself after a packet count or a port range (masscan needs a nudge to
notice, see ``run_masscan``), every subprocess has a timeout, and all traffic stays between the two
namespaces (no DNS lookups: ``-n``; the swept /24 is routed to the board, which does not forward).
Root only (namespaces, raw sockets); skipped with the reason when a tool is missing.
"""

from __future__ import annotations

import json
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import dpkt
import pytest

from lab import REPO, netns

SWEPT_NET = "10.198.5.0/24"  # behind the board: absent hosts, but their packets reach the board's wire
SWEPT_ALIVE = "10.198.5.7"  # the one host of SWEPT_NET that answers (an address of the board)
MAX_LATENCY_S = 1.0
DEBS = {"tcpdump": "tcpdump", "hping3": "hping3", "nmap": "nmap", "masscan": "masscan", "curl": "curl",
        "ping": "iputils-ping", "ab": "apache2-utils", "hydra": "hydra", "atk6-flood_router26": "thc-ipv6",
        "slowhttptest": "slowhttptest"}  # fmt: skip


def _missing(*tools: str) -> str | None:
    gone = [t for t in tools if shutil.which(t) is None]
    return f"needs {', '.join(gone)} (apt-get install {' '.join(DEBS[t] for t in gone)})" if gone else None


_LAB_SKIP = netns.skip_reason() or _missing("tcpdump")
pytestmark = [pytest.mark.skipif(_LAB_SKIP is not None, reason=str(_LAB_SKIP)), pytest.mark.slow]


# --- the lab: an attacker and a board ---------------------------------------------------------


@dataclass
class Lab:
    link: netns.VethLink
    www: Path  # what the board's web server serves

    @property
    def attacker_ip(self) -> str:
        return self.link.ip4_a

    @property
    def board_ip(self) -> str:
        return self.link.ip4_b

    def attacker_cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.link.a.name, *argv]


def _refuse_logins(listener: socket.socket) -> None:
    """A telnet login that takes no password: "login:", "Password:", "Login incorrect", closed; one thread per
    connection.  Returns when ``listener`` is closed."""

    def refuse(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            try:
                for prompt in (b"\r\nboard login: ", b"Password: "):
                    conn.sendall(prompt)
                    line = b""
                    while not line.endswith((b"\r\x00", b"\n")):  # (a telnet client ends a line with CR NUL or CR LF)
                        got = conn.recv(256)
                        if not got:
                            return
                        line += got
                conn.sendall(b"\r\nLogin incorrect\r\n")
            except OSError:
                pass  # the client went away or stalled: nothing to keep

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=refuse, args=(conn,), daemon=True).start()


# Python's web server, as a real one behaves: HTTP/1.1 (it keeps connections a client asks to keep) and no Nagle delay
# (a response at once, not after the client's delayed ACK: 40 ms per request).
WEB_SERVER = """
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *args):
        pass
handler = functools.partial(Handler, directory=sys.argv[2])
http.server.ThreadingHTTPServer((sys.argv[1], 80), handler).serve_forever()
"""
SSDP_ANSWER = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\nLOCATION: http://%s:80/device.xml\r\n"
               b"SERVER: Linux/5.10 UPnP/1.0 board/1.0\r\nST: %s\r\nUSN: uuid:5e1f0b3a-0000-4000-8000-0242ac110002::%s"
               b"\r\n\r\n")  # fmt: skip
SSDP_TARGETS = (b"upnp:rootdevice", b"urn:schemas-upnp-org:device:Basic:1", b"urn:schemas-upnp-org:service:Dummy:1")
M_SEARCH = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
            b"ST: ssdp:all\r\n\r\n")  # fmt: skip


def _answer_searches(sock: socket.socket, board_ip: str) -> None:
    """A board's UPnP stack: every M-SEARCH answered three times (root device, device, service), unicast to whoever
    sent it.  Returns when ``sock`` is closed."""
    while True:
        try:
            data, peer = sock.recvfrom(2048)
        except OSError:
            return
        if data.startswith(b"M-SEARCH"):
            for target in SSDP_TARGETS:
                try:
                    sock.sendto(SSDP_ANSWER % (board_ip.encode(), target, target), peer)
                except OSError:
                    pass  # a full socket buffer: that answer is lost, as on a busy board


@contextmanager
def serving(lab: Lab) -> Iterator[None]:
    """The board's open ports: an HTTP/1.1 web server on 80, a telnet login on 23 that refuses every password, and
    SSDP on UDP 1900."""
    web = subprocess.Popen(
        ["ip", "netns", "exec", lab.link.b.name, sys.executable, "-c", WEB_SERVER, lab.board_ip, str(lab.www)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    telnet = lab.link.b.socket(socket.AF_INET, socket.SOCK_STREAM)
    ssdp = lab.link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        telnet.bind((lab.board_ip, 23))
        telnet.listen(128)
        threading.Thread(target=_refuse_logins, args=(telnet,), daemon=True).start()
        ssdp.bind((lab.board_ip, 1900))
        threading.Thread(target=_answer_searches, args=(ssdp, lab.board_ip), daemon=True).start()
        netns.wait_until(lambda: _port_open(lab, 80), "the board's web server")
        yield
    finally:
        telnet.shutdown(socket.SHUT_RDWR)
        telnet.close()
        with suppress(OSError):  # (Linux wakes the reader, though an unconnected socket answers ENOTCONN)
            ssdp.shutdown(socket.SHUT_RDWR)
        ssdp.close()
        web.terminate()
        web.wait(10)


def _port_open(lab: Lab, port: int) -> bool:
    with lab.link.a.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((lab.board_ip, port)) == 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    www = tmp_path_factory.mktemp("www")
    (www / "firmware.bin").write_bytes(bytes(range(256)) * 1024)  # 256 KiB: a download of many segments
    (www / "index.html").write_text("<html><body>board</body></html>\n")
    (www / "m-search.txt").write_bytes(M_SEARCH)  # (the reflection attack's request, for hping3 -E)
    with netns.veth_pair() as link:
        lab = Lab(link, www)
        # The swept /24 lies behind the board: the attacker routes it there, the board (no forwarding)
        # drops all but its own address in it.  On the veth's own /24 absent hosts would cost only ARP
        # requests, and the kernel sends no echo request to a host that never answers ARP.
        link.a.run("ip", "route", "add", SWEPT_NET, "via", lab.board_ip)
        link.b.run("ip", "addr", "add", f"{SWEPT_ALIVE}/32", "dev", "lo")
        # A veth offers TSO, so the capture would hold the board's TCP segments of up to 64 KiB as the
        # kernel built them, frames no Ethernet wire carries (the anomaly detector rightly finds them odd).
        # Frames of at most one MTU, as a board's NIC without TSO puts them on the wire and captures them.
        for ns, ifname in ((link.a, link.if_a), (link.b, link.if_b)):
            ns.run("ip", "link", "set", "dev", ifname, "gso_max_size", "1514")
        with serving(lab):
            yield lab


# --- capturing on the board's side ------------------------------------------------------------


class Tcpdump:
    """tcpdump on the board's interface writing ``path``; ``stop()`` ends it cleanly (pcap complete)."""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.path = path
        self.stats: dict[str, int] = {}
        # --immediate-mode: packets reach the file as they arrive, not when a ring block times out,
        # so an idle file means the capture has caught up.  -Z root: write as root into pytest's temp dir.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.link.b.name, "tcpdump", "-i", lab.link.if_b, "-nn", "-U",
             "--immediate-mode", "-s", "256", "-Z", "root", "-w", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = _read_line(self.proc, 10.0)
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"tcpdump did not start: {line!r}")

    def wait_quiet(self, quiet_s: float = 0.3, deadline_s: float = 10.0) -> None:
        """Until the file has not grown for ``quiet_s``: the tool's last packets and their answers are in."""
        end = time.monotonic() + deadline_s
        size, since = -1, time.monotonic()
        while time.monotonic() < end:
            now_size = self.path.stat().st_size if self.path.exists() else 0
            if now_size != size:
                size, since = now_size, time.monotonic()
            elif size > 24 and time.monotonic() - since >= quiet_s:  # 24: the pcap file header alone
                return
            time.sleep(0.05)

    def stop(self) -> dict[str, int]:
        if self.proc.returncode is None:
            self.wait_quiet()
            self.proc.send_signal(signal.SIGINT)
            _, err = self.proc.communicate(timeout=10)
            for line in err.splitlines():  # "12 packets captured", "12 packets received by filter", ...
                words = line.split(" packets ")
                if len(words) == 2 and words[0].isdigit():
                    self.stats[words[1]] = int(words[0])
        return self.stats

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    ready, _, _ = select.select([proc.stderr], [], [], timeout_s)
    return proc.stderr.readline() if ready else ""


# --- what the capture holds and what the agent says -------------------------------------------

_TCP_FLAGS = "FSRPAUEC"


def _tcp_flags(flags: int) -> str:
    return "".join(c for i, c in enumerate(_TCP_FLAGS) if flags & (1 << i)) or "none"


@dataclass
class Shape:
    """What the attacker put on the wire (IP frames from its MAC, or from any MAC but the board's where it forges
    them), for assertions and messages."""

    first_ts: float | None = None
    last_ts: float | None = None
    sent: Counter = field(default_factory=Counter)  # "tcp S", "udp", "icmp 8", ...
    frames: int = 0  # all frames in the capture, answers included

    @property
    def rate(self) -> float:
        span = (self.last_ts or 0.0) - (self.first_ts or 0.0)
        return sum(self.sent.values()) / span if span > 0 else 0.0

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in self.sent.most_common(5))
        span = (self.last_ts or 0.0) - (self.first_ts or 0.0)
        return (f"attacker sent {sum(self.sent.values())} IPv4 frames in {span:.2f} s ({self.rate:.0f}/s): "
                f"{kinds}; {self.frames} frames captured in all")  # fmt: skip


def _kind(ip: dpkt.ip.IP | dpkt.ip6.IP6) -> str:
    if isinstance(ip.data, dpkt.tcp.TCP):
        return f"tcp {_tcp_flags(ip.data.flags)}"
    if isinstance(ip.data, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        return f"icmp {ip.data.type}"
    proto = ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt
    return {17: "udp"}.get(proto, f"proto {proto}")


def read_shape(pcap: Path, attacker_mac: str, board_mac: str | None = None) -> Shape:
    """``board_mac``: the attacker forges source MACs too; every frame but the board's is its."""
    shape = Shape()
    mac = bytes.fromhex(attacker_mac.replace(":", ""))
    board = bytes.fromhex(board_mac.replace(":", "")) if board_mac else None
    with pcap.open("rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            shape.frames += 1
            eth = dpkt.ethernet.Ethernet(buf)
            # Spoofed floods carry random source addresses but the attacker's MAC (unless it forges MACs too).
            theirs = eth.src != board if board is not None else eth.src == mac
            if not theirs or not isinstance(eth.data, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            shape.first_ts = float(ts) if shape.first_ts is None else shape.first_ts
            shape.last_ts = float(ts)
            shape.sent[_kind(eth.data)] += 1
    return shape


def detect(pcap: Path) -> list[dict]:
    """The agent's verdicts on ``pcap``, from ``python -m agent detect --jsonl`` in its own process."""
    # cwd=REPO: ``-m`` puts it first on sys.path, so this checkout's agent judges, whatever is installed.
    done = subprocess.run([sys.executable, "-m", "agent", "detect", "--jsonl", str(pcap)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"detect failed: {done.stderr[-2000:]}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [d for d in lines if d.get("type") == "verdict"]


def _verdict_line(v: dict, start: float | None) -> str:
    after = v["decided_at"] - (start if start is not None else v["first_seen"])
    return (f"{v['kind']} {v['label']} [{v['basis']}] {v['src_ip']} -> {v['victim_ip']}:{v['victim_port']} "
            f"proto {v['proto']} at +{after:.3f} s")  # fmt: skip


def describe(verdicts: list[dict], shape: Shape) -> str:
    rows = [_verdict_line(v, shape.first_ts) for v in verdicts]
    return f"{shape.describe()}\nverdicts: " + ("; ".join(rows) or "none")


# --- the attacks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A known miss of the agent (its header rules or its model), as an xfail of one check."""

    reason: str
    strict: bool = True


@dataclass(frozen=True)
class Attack:
    name: str
    tool: str
    argv: Callable[[Lab], list[str]]
    labels: frozenset[str]  # classes that name this attack
    spoofed: bool = False  # random source addresses: judged as a flood at the board
    group: str | None = None  # a spoofed flood at this group address (multicast), not at the board; MACs forged
    ipv6: bool = False  # at the board's IPv6 address, from one of the attacker's
    proto: int | None = None
    ok_codes: tuple[int, ...] = (0,)
    gaps: dict[str, Gap] = field(default_factory=dict)  # check name -> known gap
    runner: Callable[[Lab, Tcpdump, list[str]], None] | None = None  # None: run to the end, then stop the capture

    def run(self, lab: Lab, dump: Tcpdump) -> None:
        if self.runner is not None:
            self.runner(lab, dump, self.argv(lab))
            return
        done = subprocess.run(lab.attacker_cmd(*self.argv(lab)), capture_output=True, text=True, timeout=60)
        assert done.returncode in self.ok_codes, f"{self.tool} failed ({done.returncode}): {done.stderr[-1000:]}"


def run_masscan(lab: Lab, dump: Tcpdump, argv: list[str]) -> None:
    """masscan's receive thread blocks in libpcap until a frame arrives, so after its last probe it waits
    for traffic that never comes (robertdavidgraham/masscan#144: "waiting -7-secs").  Once the board's
    capture is quiet and stopped, datagrams on the link wake it and it exits by itself."""
    proc = subprocess.Popen(lab.attacker_cmd(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        dump.wait_quiet(quiet_s=1.0, deadline_s=30.0)  # longer quiet: masscan pauses after its first probe
        dump.stop()
        with lab.link.a.socket(socket.AF_INET, socket.SOCK_DGRAM) as nudge:
            end = time.monotonic() + 20.0
            while proc.poll() is None and time.monotonic() < end:
                nudge.sendto(b"wake", (lab.board_ip, 9))
                time.sleep(0.2)
        assert proc.poll() == 0, f"masscan did not finish ({proc.returncode}): {proc.stderr.read()[-1000:]!r}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def run_for(seconds: float) -> Callable[[Lab, Tcpdump, list[str]], None]:
    """A runner for tools that attack until interrupted or their own end (THC-IPv6's, slowhttptest): ``seconds`` of
    it, then SIGINT (a tool that ended by itself must have ended well)."""

    def run(lab: Lab, _dump: Tcpdump, argv: list[str]) -> None:
        proc = subprocess.Popen(lab.attacker_cmd(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(seconds)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(5)
            failed = f"{argv[0]} failed ({proc.returncode}): {proc.stderr.read()[-1000:]!r}"
            assert proc.returncode in (0, -signal.SIGINT), failed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    return run


def _slowhttp(mode: str) -> Callable[[Lab], list[str]]:
    """slowhttptest in ``mode`` (-H slowloris, -B slow POST): 500 connections opened at 400 a second, each fed a header
    line or a body byte every 2 s, for at most 30 s."""
    return lambda lab: ["slowhttptest", mode, "-c", "500", "-r", "400", "-i", "2", "-l", "30",
                        "-u", f"http://{lab.board_ip}/index.html"]  # fmt: skip


def _hping(*args: str) -> Callable[[Lab], list[str]]:
    return lambda lab: ["hping3", "-q", *args, lab.board_ip]


def _nmap(*args: str, target: Callable[[Lab], str] = lambda lab: lab.board_ip) -> Callable[[Lab], list[str]]:
    return lambda lab: ["nmap", "-n", "-T4", *args, target(lab)]


def _masscan(lab: Lab) -> list[str]:
    # In a namespace masscan cannot find a gateway: name the interface, our address and the next hop's MAC
    # (the board itself, on-link).  --wait 0: nothing to wait for on a veth.
    return ["masscan", "-p1-1000", "--rate", "2000", "--wait", "0", "--adapter", lab.link.if_a,
            "--adapter-ip", lab.attacker_ip, "--router-mac", lab.link.mac_b, lab.board_ip]  # fmt: skip


PASSWORDS = ("admin", "root", "1234", "12345", "password", "xc3511", "vizxv", "888888", "default", "user", "support",
             "system", "54321", "7ujMko0admin", "anko", "Zte521", "hi3518", "jvbzd", "klv123", "realtek")


def _hydra(lab: Lab) -> list[str]:
    """hydra guessing root's password from Mirai's own first guesses: 8 tasks, a new connection per guess."""
    passwords = lab.www.parent / "passwords.txt"
    passwords.write_text("\n".join(PASSWORDS) + "\n")
    return ["hydra", "-I", "-t", "8", "-w", "5", "-l", "root", "-P", str(passwords), f"telnet://{lab.board_ip}"]


SCAN = frozenset({"mirai_scan"})
FIRST_SYN_IS_A_PROBE = Gap(
    "hping3 -S -p 80: its first SYN, bare (no TCP options) to a port it had not tried, is what a scanning bot sends "
    "the board once (the lone-probe rule convicts it as mirai_scan at that packet); the SYN flood verdict follows "
    "60-80 ms later, when the rate shows",
    strict=False,
)
FLOOD_PACE = ("-i", "u500")  # ~2000 packets/s
HPING_OK = (0, 1)  # 1: no answer came back (none to FIN/Xmas at an open port; spoofed sources get theirs elsewhere)
ATTACKS = [
    Attack("hping3-syn-flood", "hping3", _hping("-S", "-p", "80", "-c", "4000", *FLOOD_PACE),
           frozenset({"mirai_syn"}), ok_codes=HPING_OK, gaps={"named": FIRST_SYN_IS_A_PROBE}),
    Attack("hping3-syn-flood-rand-source", "hping3",
           _hping("-S", "-p", "80", "--rand-source", "-c", "4000", *FLOOD_PACE),
           frozenset({"mirai_syn"}), spoofed=True, ok_codes=HPING_OK),
    Attack("hping3-udp-flood", "hping3", _hping("-2", "-p", "53", "-d", "1200", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_udp", "mirai_udpplain"}), proto=17, ok_codes=HPING_OK),
    Attack("hping3-udp-flood-rand-source", "hping3",
           _hping("-2", "-p", "53", "-d", "512", "--rand-source", "-c", "3000", *FLOOD_PACE),
           frozenset({"mirai_udp", "mirai_udpplain"}), spoofed=True, proto=17, ok_codes=HPING_OK),
    Attack("hping3-icmp-flood-rand-source", "hping3", _hping("-1", "--rand-source", "-c", "3000", *FLOOD_PACE),
           frozenset({"mirai_udp"}), spoofed=True, proto=1, ok_codes=HPING_OK),
    Attack("hping3-echo-reply-flood", "hping3", _hping("-1", "-C", "0", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_udp"}), proto=1, ok_codes=HPING_OK),
    Attack("hping3-echo-reply-flood-rand-source", "hping3", _hping("-1", "-C", "0", "--rand-source", "-c", "3000",
                                                                   *FLOOD_PACE),
           frozenset({"mirai_udp"}), proto=1, spoofed=True, ok_codes=HPING_OK),
    # BlackNurse: ICMP port unreachable (type 3 code 3) answering nothing the board sent, which costs firewalls dearly.
    Attack("hping3-blacknurse-flood", "hping3", _hping("-1", "-C", "3", "-K", "3", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_udp"}), proto=1, ok_codes=HPING_OK),
    Attack("hping3-icmp-flood", "hping3", _hping("-1", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_udp"}), proto=1, ok_codes=HPING_OK),
    Attack("hping3-fin-flood", "hping3", _hping("-F", "-p", "80", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_ack"}), proto=6, ok_codes=HPING_OK),
    Attack("hping3-ack-flood", "hping3", _hping("-A", "-p", "80", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_ack"}), proto=6, ok_codes=HPING_OK),
    Attack("hping3-xmas-flood", "hping3", _hping("-F", "-P", "-U", "-p", "80", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_ack"}), proto=6, ok_codes=HPING_OK),
    # CIC-IoT-2023's RSTFIN flood: RST with FIN is no stack's answer.
    Attack("hping3-rst-fin-flood", "hping3", _hping("-R", "-F", "-p", "80", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_ack"}), proto=6, ok_codes=HPING_OK),
    # Bare RSTs (and RST-ACKs) on socket pairs the board never sent on: they refuse nothing.
    Attack("hping3-rst-flood", "hping3", _hping("-R", "-p", "80", "-c", "2000", *FLOOD_PACE),
           frozenset({"mirai_ack"}), proto=6, ok_codes=HPING_OK),
    Attack("hping3-rst-ack-flood-rand-source", "hping3",
           _hping("-R", "-A", "-p", "80", "--rand-source", "-c", "3000", *FLOOD_PACE),
           frozenset({"mirai_ack"}), spoofed=True, proto=6, ok_codes=HPING_OK),
    # Datagrams of 3,000 bytes in fragments of a 1,400-byte MTU: two frames of three carry no transport header.
    Attack("hping3-ack-fragment-flood", "hping3", _hping("-A", "-p", "80", "-d", "3000", "-m", "1400", "-c", "1500",
                                                         *FLOOD_PACE),
           frozenset({"mirai_ack"}), proto=6, ok_codes=HPING_OK),  # fmt: skip
    Attack("hping3-udp-fragment-flood", "hping3", _hping("-2", "-p", "53", "-d", "3000", "-m", "1400", "-c", "1500",
                                                         *FLOOD_PACE),
           frozenset({"mirai_udp", "mirai_udpplain"}), proto=17, ok_codes=HPING_OK),  # fmt: skip
    Attack("hping3-icmp-fragment-flood", "hping3", _hping("-1", "-d", "3000", "-m", "1400", "-c", "1500", *FLOOD_PACE),
           frozenset({"mirai_udp"}), proto=1, ok_codes=HPING_OK),
    # The board as a reflector: M-SEARCHes to its SSDP service from a new port each, every one answered three times.
    # A reflection attack forges the victim's address; here the attacker asks from its own, which the board sees
    # the same way (answers to a forged address would need a route back to it).
    Attack("hping3-ssdp-reflection", "hping3",
           lambda lab: ["hping3", "-q", "-2", "-p", "1900", "-E", str(lab.www / "m-search.txt"),
                        "-d", str(len(M_SEARCH)), "-c", "1500", *FLOOD_PACE, lab.board_ip],
           frozenset({"mirai_udp"}), proto=17, ok_codes=HPING_OK),  # fmt: skip
    # An HTTP flood: complete connections and requests, one connection per request (ApacheBench, no keep-alive).
    Attack("ab-http-flood", "ab", lambda lab: ["ab", "-q", "-n", "3000", "-c", "4", f"http://{lab.board_ip}/index.html"],
           frozenset({"mirai_syn"}), proto=6),
    # An HTTP flood over 4 connections it keeps, as GoldenEye, HULK and wrk flood (curl: 3,000 URLs, 4 at a time;
    # ab -k waits for a Keep-Alive header that Python's server never sends).
    Attack("curl-http-keepalive-flood", "curl",
           lambda lab: ["curl", "-s", "--parallel", "--parallel-max", "4",
                        f"http://{lab.board_ip}/index.html?[1-3000]"],
           frozenset({"mirai_ack"}), proto=6),
    # A password guesser at the board's telnet login (CIC-IoT-2023's dictionary brute force; the IoT botnets that
    # spread by telnet): a new connection per guess, kernel SYNs, no Mirai fingerprint.
    Attack("hydra-telnet-brute-force", "hydra", _hydra, SCAN, ok_codes=(0, 255)),
    Attack("nmap-syn-scan", "nmap", _nmap("-sS", "-p1-1000"), SCAN),
    # Kernel SYNs with the full option block, as Mirai's SYN flood at random ports sends, but all from ephemeral ports.
    Attack("nmap-connect-scan", "nmap", _nmap("-sT", "-p1-1000"), SCAN),
    Attack("nmap-fin-scan", "nmap", _nmap("-sF", "-p1-1000"), SCAN),
    Attack("nmap-ack-scan", "nmap", _nmap("-sA", "-p1-1000"), SCAN),
    Attack("nmap-syn-scan-ipv6", "nmap", _nmap("-6", "-sS", "-p1-1000", target=lambda lab: lab.link.ip6_b), SCAN,
           ipv6=True),
    Attack("nmap-connect-scan-ipv6", "nmap", _nmap("-6", "-sT", "-p1-1000", target=lambda lab: lab.link.ip6_b), SCAN,
           ipv6=True),
    Attack("nmap-os-detection", "nmap", _nmap("-O", "--osscan-guess"), SCAN),
    Attack("nmap-version-scan", "nmap", _nmap("-sV", "--top-ports", "100", "--version-light"), SCAN),
    Attack("nmap-xmas-scan", "nmap", _nmap("-sX", "-p1-1000"), SCAN),
    Attack("nmap-null-scan", "nmap", _nmap("-sN", "-p1-1000"), SCAN),
    # Off-link targets: nmap's default discovery probes (echo request, SYN 443, ACK 80, timestamp request).
    Attack("nmap-ping-sweep", "nmap", _nmap("-sn", target=lambda lab: SWEPT_NET), SCAN),
    Attack("nmap-udp-scan", "nmap", _nmap("-sU", "--top-ports", "100", "--max-retries", "1"), SCAN, proto=17),
    Attack("masscan-syn-scan", "masscan", _masscan, SCAN, runner=run_masscan),
    # Slow HTTP attacks hold hundreds of connections open; when they end (slowloris stopped after 6 s; the board's
    # server refuses the slow POSTs), hundreds close at once and the board answers each (a burst of FIN-ACKs on pairs
    # quiet for seconds, once taken for an ack flood of the board's).
    Attack("slowhttptest-slowloris", "slowhttptest", _slowhttp("-H"), frozenset({"mirai_syn"}),
           runner=run_for(6.0)),
    Attack("slowhttptest-slow-post", "slowhttptest", _slowhttp("-B"), frozenset({"mirai_syn"}), runner=run_for(6.0)),
    # Router advertisements from forged routers (a new MAC and link-local address each, 17 prefixes and routes
    # apiece) to every node of the link: each host configures addresses and routes for every one.
    Attack("thc-ipv6-router-advertisement-flood", "atk6-flood_router26",
           lambda lab: ["atk6-flood_router26", lab.link.if_a], frozenset({"mirai_udp"}), spoofed=True, group="ff02::1",
           proto=58, runner=run_for(1.0)),
]


def _param(attack: Attack):
    skip = _missing(attack.tool)
    return pytest.param(attack, id=attack.name, marks=pytest.mark.skipif(skip is not None, reason=str(skip)))


@dataclass
class Observation:
    attack: Attack
    shape: Shape
    verdicts: list[dict]

    def __str__(self) -> str:
        return describe(self.verdicts, self.shape)


def record(lab: Lab, pcap: Path, act: Callable[[Tcpdump], None], forged_macs: bool = False) -> Shape:
    """Capture on the board while ``act`` runs; the pcap is complete when this returns."""
    dump = Tcpdump(lab, pcap)
    try:
        act(dump)
        stats = dump.stop()
    finally:
        dump.kill()
    assert stats.get("dropped by kernel", 0) == 0, f"the capture lost packets: {stats}"
    return read_shape(pcap, lab.link.mac_a, lab.link.mac_b if forged_macs else None)


@pytest.fixture(scope="module", params=[_param(a) for a in ATTACKS])
def observed(request: pytest.FixtureRequest, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Observation:
    attack: Attack = request.param
    pcap = tmp_path_factory.mktemp("captures") / f"{attack.name}.pcap"
    shape = record(lab, pcap, lambda dump: attack.run(lab, dump), forged_macs=attack.group is not None)
    assert shape.first_ts is not None, f"{attack.tool} sent nothing the board saw"
    return Observation(attack, shape, detect(pcap))


def expect_gap(request: pytest.FixtureRequest, attack: Attack, check: str) -> None:
    gap = attack.gaps.get(check)
    if gap is not None:
        request.applymarker(pytest.mark.xfail(reason=gap.reason, strict=gap.strict))


def names_attacker(v: dict, lab: Lab, attack: Attack) -> bool:
    if attack.spoofed:
        return v["kind"] == "spoofed" and v["victim_ip"] in ((attack.group,) if attack.group else (lab.board_ip, None))
    ours = (lab.link.ip6_a, lab.link.ip6_a2) if attack.ipv6 else (lab.attacker_ip,)  # (nmap -6 picks either)
    return v["kind"] == "source" and v["src_ip"] in ours


def in_time(v: dict, shape: Shape) -> bool:
    return v["decided_at"] - shape.first_ts < MAX_LATENCY_S


# --- the tests --------------------------------------------------------------------------------


def test_attack_is_reported(request: pytest.FixtureRequest, observed: Observation, lab: Lab) -> None:
    expect_gap(request, observed.attack, "reported")
    hits = [v for v in observed.verdicts if names_attacker(v, lab, observed.attack)]
    assert hits, f"no verdict names the attack\n{observed}"
    assert any(in_time(v, observed.shape) for v in hits), f"reported, but not within {MAX_LATENCY_S} s\n{observed}"


def test_attack_is_named(request: pytest.FixtureRequest, observed: Observation, lab: Lab) -> None:
    """The first verdict that names the attacker has the attack's class (a responder acts on the first)."""
    attack = observed.attack
    expect_gap(request, attack, "named")
    hits = sorted((v for v in observed.verdicts if names_attacker(v, lab, attack)), key=lambda v: v["decided_at"])
    fits = [v for v in hits[:1] if v["label"] in attack.labels and (attack.proto is None or v["proto"] == attack.proto)]
    assert fits, f"the first verdict does not call it {'/'.join(sorted(attack.labels))}\n{observed}"
    assert any(in_time(v, observed.shape) for v in fits), f"named, but not within {MAX_LATENCY_S} s\n{observed}"


def test_board_is_not_accused(request: pytest.FixtureRequest, observed: Observation, lab: Lab) -> None:
    """The board only answers: a verdict against its own address would have the agent report and block itself."""
    expect_gap(request, observed.attack, "board")
    accused = [v for v in observed.verdicts if v["kind"] == "source" and v["src_ip"] in (lab.board_ip, lab.link.ip6_b)]
    assert not accused, f"the victim convicted\n{observed}"


@pytest.mark.skipif(_missing("curl", "ping") is not None, reason=str(_missing("curl", "ping")))
def test_downloads_and_pings_raise_nothing(lab: Lab, tmp_path: Path) -> None:
    """A client fetching the board's pages and firmware and pinging it, as a phone app or a gateway would."""

    def browse(_dump: Tcpdump) -> None:
        for page in ("index.html", "firmware.bin", "index.html", "firmware.bin"):
            cmd = lab.attacker_cmd("curl", "-sf", "-o", "/dev/null", f"http://{lab.board_ip}/{page}")
            subprocess.run(cmd, check=True, timeout=20)
        subprocess.run(lab.attacker_cmd("ping", "-c", "5", lab.board_ip), check=True,
                       capture_output=True, timeout=20)  # fmt: skip

    pcap = tmp_path / "benign.pcap"
    shape = record(lab, pcap, browse)
    verdicts = detect(pcap)
    assert not verdicts, f"benign traffic convicted\n{describe(verdicts, shape)}"
