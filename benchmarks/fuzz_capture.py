"""Fuzz the capture reader and the packet parser with a million generated inputs (issue #7).

    python benchmarks/fuzz_capture.py [--records 1000000] [--frames 1000000] [--seed 7]
                                      [--corpus tests/data/fuzz_corpus] [--out FILE]

One *input* is one generated packet: either a packet record written into a generated capture file
(it goes through read_capture and, when delivered, parse_frames) or a standalone frame handed to
parse_frames in a batch.  ``--records`` and ``--frames`` set how many of each; files are counted too
(each holds 1..400 records).  Generators live in lab/capture_fuzz.py, checks in lab/capture_oracle.py
(shared with tests/agent/capture/test_fuzz_regressions.py); see their docstrings for what is generated
and which invariants hold.

Every file is read twice (default read chunk, then a tiny one) and its frames are parsed; anything
raised other than CaptureFormatError on an unusable file header, and every broken invariant, is a
failure: it is counted by type and message, and its input is written to ``--corpus`` (at most three
files per distinct failure) so tests/agent/capture/test_fuzz_regressions.py replays it from then on.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import save

log = logging.getLogger("fuzz_capture")
EXAMPLES_PER_FAILURE = 3


@dataclass
class Failures:
    """Failures grouped by a signature (exception type + message with numbers blanked + where it was raised)."""

    corpus: Path | None
    counts: Counter = field(default_factory=Counter)
    details: dict[str, dict] = field(default_factory=dict)

    def add(self, exc: BaseException, data: bytes, suffix: str) -> None:
        cause = exc.__cause__ or exc
        frames = reversed(traceback.extract_tb(cause.__traceback__))
        where = next((f"{Path(fs.filename).name}:{fs.lineno}" for fs in frames if "/agent/" in fs.filename), "")
        # Invariant failures group by the invariant; exceptions by their message with the numbers blanked.
        message = getattr(exc, "check", None) or re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "N", str(exc))[:160]
        signature = f"{type(exc).__name__} {where}: {message}"
        self.counts[signature] += 1
        detail = self.details.setdefault(signature, {"type": type(cause).__name__, "where": where, "message":
                                                      str(exc)[:300], "inputs": []})
        if self.counts[signature] == 1:
            log.error("new failure: %s", signature)
        if self.corpus and len(detail["inputs"]) < EXAMPLES_PER_FAILURE:
            slug = re.sub(r"[^a-z0-9]+", "-", f"{type(cause).__name__} {message}".lower()).strip("-")[:60]
            path = self.corpus / f"found-{slug}-{hashlib.sha1(data).hexdigest()[:8]}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            detail["inputs"].append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))

    def report(self) -> list[dict]:
        return [{"signature": s, "count": n, **self.details[s]} for s, n in self.counts.most_common()]


@dataclass
class Totals:
    files: Counter = field(default_factory=Counter)  # pcap / pcapng / rejected / exact ...
    labels: Counter = field(default_factory=Counter)  # what was generated, per kind of input and damage
    records_generated: int = 0
    records_reached: int = 0  # records the reader must reach, by the model (a lower bound for damaged files)
    frames_direct: int = 0
    frames_delivered: int = 0
    reader_skipped: Counter = field(default_factory=Counter)
    parser_frames: int = 0
    parser_decoded: int = 0
    parser_skipped: Counter = field(default_factory=Counter)


def fuzz_files(rng: random.Random, records: int, tmp: Path, totals: Totals, failures: Failures) -> None:
    from lab.capture_fuzz import random_capture
    from lab.capture_oracle import check_capture

    report_every = max(records // 10, 1)
    next_report = report_every
    while totals.records_generated < records:
        capture = random_capture(rng)
        totals.records_generated += capture.records_generated
        totals.records_reached += sum(o.record for o in capture.outcomes)
        totals.files[capture.fmt] += 1
        totals.files["exact_model" if capture.exact else "prefix_model"] += 1
        totals.labels.update(capture.labels)
        path = tmp / f"input{capture.suffix}"
        path.write_bytes(capture.data)
        try:
            result = check_capture(path, capture, rng)
        except Exception as exc:  # noqa: BLE001 (every escape is a finding)
            failures.add(exc, capture.data, capture.suffix)
            continue
        totals.files["rejected" if result.reading.rejected else "accepted"] += 1
        totals.frames_delivered += len(result.reading.delivered)
        totals.reader_skipped.update(result.reading.stats.skipped)
        totals.parser_frames += result.frames
        totals.parser_decoded += result.parser_stats.decoded
        totals.parser_skipped.update(result.parser_stats.skipped)
        if totals.records_generated >= next_report:
            log.info("%d records in %d files", totals.records_generated, totals.files["pcap"] + totals.files["pcapng"])
            next_report += report_every


def fuzz_frames(rng: random.Random, frames: int, batch: int, totals: Totals, failures: Failures) -> None:
    from agent.capture.packets import DecodeStats, FrameBatch
    from lab.capture_fuzz import frame_batch
    from lab.capture_oracle import check_parsed, parse_checked

    done = 0
    while done < frames:
        n = min(batch, frames - done)
        frame_rows, labels = frame_batch(rng, n)
        done += n
        totals.frames_direct += n
        totals.labels.update(f"frame:{label}" for label in labels)
        stats = DecodeStats()
        try:
            check_parsed(frame_rows, parse_checked(frame_rows, stats), stats)
        except Exception:  # noqa: BLE001
            for i in range(n):  # find the frames that fail on their own, and keep those
                one = FrameBatch(**{k: getattr(frame_rows, k)[i : i + 1] for k in
                                    ("index", "ts", "wire_len", "cap_len", "offset", "linktype")}, buf=frame_rows.buf)
                one_stats = DecodeStats()
                try:
                    check_parsed(one, parse_checked(one, one_stats), one_stats)
                except Exception as exc:  # noqa: BLE001
                    start, cap = int(one.offset[0]), max(int(one.cap_len[0]), 0)
                    failures.add(exc, one.buf[max(start, 0) : max(start, 0) + cap].tobytes(), ".frame")
            continue
        totals.parser_frames += n
        totals.parser_decoded += stats.decoded
        totals.parser_skipped.update(stats.skipped)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="packet records to write into capture files")
    ap.add_argument("--frames", type=int, default=1_000_000, help="standalone frames to hand to the parser")
    ap.add_argument("--batch", type=int, default=2048, help="standalone frames per parse_frames call")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "fuzz_corpus"),
                    help="where inputs that fail are written ('' to keep none)")
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("agent").setLevel(logging.CRITICAL)  # the reader warns about every damaged file

    rng = random.Random(args.seed)
    totals, failures = Totals(), Failures(Path(args.corpus) if args.corpus else None)
    start = time.perf_counter()
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="fuzz_capture_", dir=shm if shm.is_dir() else None) as tmp:
        fuzz_files(rng, args.records, Path(tmp), totals, failures)
    files_seconds = time.perf_counter() - start
    fuzz_frames(rng, args.frames, args.batch, totals, failures)
    seconds = time.perf_counter() - start

    inputs = totals.records_generated + totals.frames_direct
    files = totals.files["pcap"] + totals.files["pcapng"]
    reader_counted = sum(totals.reader_skipped.values())
    parser_counted = sum(totals.parser_skipped.values())
    results = {
        "seed": args.seed,
        "input_definition": "one generated packet: a record in a generated capture file, or a standalone frame",
        "inputs": inputs,
        "records_in_files": totals.records_generated,
        "records_reached": totals.records_reached,
        "frames_standalone": totals.frames_direct,
        "files": dict(totals.files),
        "generated_per_kind": dict(sorted(totals.labels.items())),
        # Counted: skipped records plus the blocks that hold no record (unknown_block, truncated_block, ...).
        "reader": {"frames_delivered": totals.frames_delivered, "counted": reader_counted,
                   "skipped": dict(totals.reader_skipped.most_common())},
        "parser": {"frames": totals.parser_frames, "decoded": totals.parser_decoded, "skipped_total": parser_counted,
                   "decoded_plus_skipped_equals_frames": totals.parser_decoded + parser_counted == totals.parser_frames,
                   "skipped": dict(totals.parser_skipped.most_common())},
        "failures": failures.report(),
        "failures_total": sum(failures.counts.values()),
        "seconds": round(seconds, 1),
        "seconds_files": round(files_seconds, 1),
        "inputs_per_second": round(inputs / seconds),
    }
    print(f"{inputs:,} inputs ({totals.records_generated:,} records in {files:,} files, "
          f"{totals.frames_direct:,} standalone frames) in {seconds:.0f} s, seed {args.seed}")
    print(f"reader: {totals.files['rejected']:,} files refused (CaptureFormatError), "
          f"{totals.frames_delivered:,} frames delivered, {reader_counted:,} counted: "
          f"{dict(totals.reader_skipped.most_common())}")
    print(f"parser: {totals.parser_frames:,} frames, {totals.parser_decoded:,} decoded, {parser_counted:,} skipped: "
          f"{dict(totals.parser_skipped.most_common())}")
    print(f"failures: {results['failures_total']}")
    for failure in results["failures"]:
        print(f"  {failure['count']:6d}  {failure['signature']}")
    print("written to", save(results, args.out, "fuzz_capture"))


if __name__ == "__main__":
    main()
