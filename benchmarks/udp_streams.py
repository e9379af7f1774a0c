"""One-way UDP streams of one datagram size: benign ones a board sends or receives, and floods of the same size and rate.

    python benchmarks/udp_streams.py [--seconds 5] [--out FILE]

A flood's datagrams are one size (Mirai's ``len``, Gafgyt's size, hping3's ``-d``), and so are many benign streams
that nobody answers on their socket pair: G.711 audio over RTP from a doorbell, MPEG-TS over RTP or plain UDP (7 x
188 bytes) from an IPTV box or a camera, a sensor's fixed-size telemetry frames, a LiDAR's 1,206-byte firing data.
Their sizes and socket pairs look like udpplain's, but not their payloads: an application's datagrams carry a
header in which some bytes stay (a version, a payload type, an SSRC, a magic number, a sync byte) and some move on
(a sequence number, a timestamp), where a flood's payload is random in every byte (Mirai's ``rand``, the default)
or the same in every byte of every datagram (Mirai with ``rand=0``, Gafgyt's one random string, hping3's zeros).

Each case runs in both views (the board sending to a host on the internet; a host on the LAN sending to the board)
through the whole pipeline with the bundled model, anomaly detector and decision stage.  Then the board as a hub:
100 sensors reporting once a second, 30 reporting 50 times a second, every one of them a never-seen source at
first (as after the agent restarts), and the same senders with random payloads.  Printed per case and
written to ``benchmarks/results/udp_streams.json``: packets, the share labelled an attack, the first verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.capture.headers import Field, Header  # noqa: E402
from benchmarks.common import save  # noqa: E402
from benchmarks.gafgyt_floods import Case, _ends, run_cases  # noqa: E402


# A sensor's frame header: a magic number, the sensor's id, its own counter and millisecond clock (samples follow).
SENSOR_FRAME = Header("sensor_frame", (
    Field("magic", "4s", b"SNSR"),
    Field("device", "I"),
    Field("seq", "I"),
    Field("clock_ms", "I"),
))


def rtp(rng: np.random.Generator, n: int, size: int, payload_type: int, ts_step: int) -> np.ndarray:
    """RTP (RFC 3550): version 2, the payload type, sequence number and timestamp counting, one SSRC; the encoded
    media after the 12-byte header, random as compressed media is."""
    from convert.synth.frames import pack
    from convert.synth.payloads import RTP

    rows = rng.integers(0, 256, (n, size), dtype=np.uint8)
    seq0, ts0, ssrc = int(rng.integers(0, 65536)), int(rng.integers(0, 1 << 31)), int(rng.integers(0, 1 << 32))
    rows[:, : RTP.size] = pack(RTP, n, m_pt=payload_type, seq=seq0 + np.arange(n), ts=ts0 + ts_step * np.arange(n),
                               ssrc=ssrc)  # fmt: skip
    return rows


def mpeg_ts(rng: np.random.Generator, n: int, size: int = 7 * 188) -> np.ndarray:
    """MPEG-TS over plain UDP: 188-byte packets, each a sync byte 0x47, the video's PID and a continuity counter."""
    rows = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for k, at in enumerate(range(0, size, 188)):
        rows[:, at], rows[:, at + 1], rows[:, at + 2] = 0x47, 0x01, 0x00
        rows[:, at + 3] = 0x10 | ((np.arange(n) * 7 + k) & 0x0F)
    return rows


def sensor_frames(rng: np.random.Generator, n: int, size: int, senders: int = 1, first_device: int | None = None,
                  period_ms: int = 5) -> np.ndarray:
    """Sensors' frames (datagram i from sensor i % senders, ids from ``first_device``, drawn when None): the
    SENSOR_FRAME header, then samples (random)."""
    from convert.synth.frames import pack

    rows = rng.integers(0, 256, (n, size), dtype=np.uint8)
    device = int(rng.integers(0, 1 << 32)) if first_device is None else first_device
    count = np.arange(n) // senders
    rows[:, : SENSOR_FRAME.size] = pack(SENSOR_FRAME, n, device=device + np.arange(n) % senders, seq=count,
                                        clock_ms=period_ms * count)  # fmt: skip
    return rows


def lidar(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Velodyne VLP-16's firing data (UDP 2368, 1,206 bytes): 12 blocks of a flag 0xFFEE, an azimuth (little-endian,
    hundredths of a degree) and 32 returns, then a timestamp and two factory bytes."""
    rows = rng.integers(0, 256, (n, 1206), dtype=np.uint8)
    azimuth = (np.arange(n)[:, None] * 12 + np.arange(12)) * 20 % 36000
    for block in range(12):
        at = 100 * block
        rows[:, at], rows[:, at + 1] = 0xFF, 0xEE
        rows[:, at + 2], rows[:, at + 3] = azimuth[:, block] & 0xFF, azimuth[:, block] >> 8
    rows[:, 1204], rows[:, 1205] = 0x37, 0x22
    return rows


def hub(senders: int, payload: np.ndarray):
    """Sensors on the LAN reporting to the board (a hub): datagram i from sensor i % senders, each from its own
    address and port to the hub's port 9000; the first ``senders`` datagrams are each sensor's first the agent hears
    (as after it restarts)."""
    from convert.synth.frames import udp_frames

    n = len(payload)
    sensor = np.arange(n) % senders
    ends = _ends("victim") | dict(src_ip=_ends("victim")["src_ip"] + 16 + sensor, src_mac=0xB827EB100000 + sensor)
    return [udp_frames(n, sport=40000 + sensor, dport=9000, payload=payload, ip_id=np.arange(n) // senders % 65536,
                       df=True, **ends)]  # fmt: skip


# (sensors, readings a second from each, datagram payload bytes)
HUBS = ((100, 1.0, 120), (30, 50.0, 200))


def stream(view: str, sport: int, dport: int, payload: np.ndarray):
    """One socket pair, a kernel's headers (ids counting, DF)."""
    from convert.synth.frames import udp_frames

    n = len(payload)
    return [udp_frames(n, sport=sport, dport=dport, payload=payload, ip_id=np.arange(n) % 65536, df=True,
                       **_ends(view))]  # fmt: skip


# (name, datagram payload bytes, datagrams a second, payloads, source and destination port)
BENIGN = (
    ("G.711 audio over RTP", 172, 50.0, lambda r, n: rtp(r, n, 172, 0, 160), 5004, 40000),
    ("MPEG-TS over RTP, 5 Mbit/s", 1328, 470.0, lambda r, n: rtp(r, n, 1328, 33, 1500), 5004, 40002),
    ("MPEG-TS over UDP, 8 Mbit/s", 1316, 760.0, lambda r, n: mpeg_ts(r, n), 1234, 1234),
    ("sensor telemetry 600 B", 600, 200.0, lambda r, n: sensor_frames(r, n, 600), 47000, 9000),
    ("sensor telemetry 64 B", 64, 1000.0, lambda r, n: sensor_frames(r, n, 64), 47001, 9000),
    ("LiDAR (VLP-16)", 1206, 754.0, lambda r, n: lidar(r, n), 2368, 2368),
)


def cases() -> list[tuple[Case, callable]]:
    out = []
    for view in ("bot", "victim"):
        for name, size, rate, payloads, sport, dport in BENIGN:
            out.append((Case(f"benign: {name}", view, rate, benign=True),
                        lambda r, n, v=view, p=payloads, s=sport, d=dport: stream(v, s, d, p(r, n))))
        for size, rate in sorted({(size, rate) for _, size, rate, *_ in BENIGN}):
            floods = (("udpplain rand", lambda r, n, s=size: r.integers(0, 256, (n, s), dtype=np.uint8)),
                      ("udpplain rand=0", lambda r, n, s=size: np.zeros((n, s), np.uint8)),
                      ("one payload", lambda r, n, s=size: np.broadcast_to(r.integers(0, 256, s, dtype=np.uint8),
                                                                           (n, s)).copy()))  # fmt: skip
            for kind, payloads in floods:
                out.append((Case(f"flood {kind} size={size} {rate:g}/s", view, rate),
                            lambda r, n, v=view, p=payloads: stream(v, 40123, 8080, p(r, n))))
    for senders, rate, size in HUBS:
        out.append((Case(f"benign: hub, {senders} sensors at {rate:g}/s", "victim", senders * rate, benign=True),
                    lambda r, n, k=senders, s=size: hub(k, sensor_frames(r, n, s, k, 0x5E000000, 1000))))
        out.append((Case(f"flood: {senders} sources at {rate:g}/s, random", "victim", senders * rate),
                    lambda r, n, k=senders, s=size: hub(k, r.integers(0, 256, (n, s), dtype=np.uint8))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each stream")
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = run_cases(cases(), args.seconds, width=45)
    floods = [r for r in rows if not r["benign"]]
    summary = {
        "benign_cases": sum(r["benign"] for r in rows),
        "benign_cases_with_verdicts": sum(r["verdict"] is not None for r in rows if r["benign"]),
        "flood_cases": len(floods),
        "floods_with_verdict": sum(r["verdict_s"] is not None for r in floods),
        "floods_within_1s": sum(r["verdict_s"] is not None and r["verdict_s"] <= 1.0 for r in floods),
    }
    print(summary)
    print(save({"seconds": args.seconds, "summary": summary, "cases": rows}, args.out, "udp_streams"))


if __name__ == "__main__":
    main()
