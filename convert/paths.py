"""Where the converter writes and reads by default: the repository in a source checkout, else the current folder.

In a source checkout (an editable install, or ``python -m convert`` run from the repository) the defaults
rebuild the repository's own files: ``train`` and ``anomaly`` write ``agent/model/``, ``evaluate`` writes
``docs/``, ``demo-capture`` writes ``agent/samples/``, and the real data is ``../shared/data`` beside the
repository.  In a normal install those folders are inside site-packages, which a user's training run must
never overwrite: the defaults are then folders under the current directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository in a checkout; site-packages in a normal install
_PROJECT_NAME = re.compile(r"^name\s*=\s*iotguard\s*$", re.MULTILINE)


def source_checkout() -> Path | None:
    """The repository root when this converter runs from a source checkout, else None (a normal install)."""
    try:
        text = (ROOT / "setup.cfg").read_text()
    except OSError:
        return None
    return ROOT if _PROJECT_NAME.search(text) else None


def default_output(in_checkout: str, installed: str) -> Path:
    """``in_checkout`` under the repository in a source checkout, else ``installed`` under the current folder."""
    root = source_checkout()
    return root / in_checkout if root is not None else Path(installed)


def default_shared_data() -> Path:
    """The shared data folder (real/, nbaiot/, golden/): $IOTGUARD_SHARED_DATA, else ../shared/data beside a
    source checkout, else ./data."""
    if os.environ.get("IOTGUARD_SHARED_DATA"):
        return Path(os.environ["IOTGUARD_SHARED_DATA"])
    root = source_checkout()
    return root.parent / "shared" / "data" if root is not None else Path("data")
