"""The live agent's run loop without a network: a stand-in capture hands over the bundled demo capture's frames.

On a board with two cores or more, run() splits the stages over two threads (sense: parse, filter, features;
judge: model, decide, act); on one core it runs them in turn.  Both must reach the same verdicts, and a capture
failure in the sensor thread must stop the agent with that error.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from agent.capture.interface import CaptureError
from agent.capture.pcap import read_capture
from agent.config import AgentConfig
from agent.live import LiveAgent
from agent.profile import load_profile

DEMO = Path(__file__).resolve().parents[2] / "agent" / "samples" / "mirai_demo.pcap"


class StandInCapture:
    """What LiveAgent.run needs of a LiveCapture: batches(stop), stats(); optionally fails after the frames."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def batches(self, stop: threading.Event):
        for frames in read_capture(DEMO, batch_size=3000):
            if stop.is_set():
                return
            yield frames
        if self.fail:
            raise CaptureError("capture interface 'eth9' was removed")

    def stats(self):
        return None

    def close(self) -> None:
        pass


def run_agent(tmp_path: Path, cores: int, fail: bool = False, block: bool = True) -> LiveAgent:
    profile = dataclasses.replace(load_profile("x86_64-gateway"), cores=cores, threads=1)
    agent = LiveAgent(profile, AgentConfig(state_dir=tmp_path / f"state{cores}", block=block), enforcement="none")
    agent.capture = StandInCapture(fail)
    agent.run(threading.Event())
    return agent


def test_pipelined_and_sequential_runs_agree(tmp_path):
    """The same sources blocked.  The pipeline's sensor runs up to PIPELINE_DEPTH batches ahead of the judge, so
    a new rule filters a few batches later (more packets classified): the price of the overlap."""
    one, two = run_agent(tmp_path, cores=1), run_agent(tmp_path, cores=2)
    for c in (one.counters, two.counters):
        assert c.frames == c.decoded == 74_841 and c.filtered + c.classified == c.frames and sum(c.per_class) == c.classified
    assert two.counters.filtered <= one.counters.filtered
    # The same attackers blocked by address (flood rules last while they drop at a flood's rate in wall-clock
    # time, so which of those are still in place at the end depends on timing).
    sources = [{rule for rule in agent.rules.entries if rule.startswith("src:")} for agent in (one, two)]
    assert sources[0] == sources[1] != set()


@pytest.mark.parametrize("cores", [1, 2])
def test_a_capture_failure_stops_the_agent_with_its_error(tmp_path, cores):
    with pytest.raises(CaptureError, match="was removed"):
        run_agent(tmp_path, cores=cores, fail=True)


def test_monitor_only_reports_verdicts_and_drops_nothing(tmp_path):
    """``block = false``: every verdict is logged and reported, no local rule is made, every frame is classified."""
    agent = run_agent(tmp_path, cores=2, block=False)
    c = agent.counters
    assert c.verdicts >= 10 and not agent.rules.entries
    assert c.filtered == 0 and c.classified == c.frames == 74_841
