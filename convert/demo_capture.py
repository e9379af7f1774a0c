"""The capture bundled with the agent for its demo: a short synthesised mixed Mirai capture.

Frames are cut to their first 128 bytes (the pcap keeps each one's wire
length, which is all the features use besides headers), so the file stays a
few megabytes although the floods carry 512-byte random payloads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.capture.packets import FrameBatch

from .synth import synthesise, write

DEMO_PATH = Path(__file__).resolve().parents[1] / "agent" / "samples" / "mirai_demo.pcap"
SNAPLEN = 128


def truncate(frames: FrameBatch, snaplen: int) -> FrameBatch:
    cap = np.minimum(frames.cap_len, snaplen)
    pieces = [frames.buf[o : o + c] for o, c in zip(frames.offset.tolist(), cap.tolist())]
    out = FrameBatch.from_frames([p.tobytes() for p in pieces], frames.ts, frames.wire_len, frames.index)
    return out


def make_demo_capture(path: Path = DEMO_PATH, seconds: float = 40.0, seed: int = 3) -> Path:
    synth = synthesise("mixed", seconds, seed)
    synth.frames = truncate(synth.frames, SNAPLEN)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(synth, path)
    return path
