"""``convert train`` at a terminal: a line counting the captures synthesised, per split."""

from __future__ import annotations

import io

from convert import build_model


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_synthesis_counts_captures_on_a_terminal(monkeypatch):
    recipe = build_model.Recipe(scenarios=(("camera", 2.0),), seeds={"train": (1, 2), "val": (3,), "test": (4,)})
    shown = Tty()
    monkeypatch.setattr("sys.stderr", shown)
    splits = build_model.build_splits(recipe, workers=1)
    assert all(len(ds) for ds in splits.values())
    text = shown.getvalue()
    assert "\rsynthesising captures (train): 0 of 4 captures (0%)" in text
    assert text.endswith("\rsynthesising captures (test): 4 of 4 captures (100%)\x1b[K\n"), repr(text)
