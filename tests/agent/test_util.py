"""agent.util: atomic state-file writes and stream-key hashing (capability checks: capture/test_interface.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from agent.util import TMP_PREFIX, atomic_path, hash_words, removed_on_failure, write_atomically


def test_an_atomic_write_replaces_the_file_whole_with_its_mode(tmp_path):
    path = tmp_path / "state.json"
    write_atomically(path, b"old")
    write_atomically(path, b"new" * 1000, mode=0o644)
    assert path.read_bytes() == b"new" * 1000 and os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "rules.json"
    write_atomically(path, b"old")
    with pytest.raises(OSError):
        with atomic_path(path) as tmp:
            assert tmp.name.startswith(TMP_PREFIX) and tmp.name.endswith("rules.json")
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["rules.json"]


def test_a_failed_start_takes_back_the_folders_it_created_but_never_files(tmp_path):
    state = tmp_path / "var" / "lib" / "iotguard"
    with pytest.raises(RuntimeError):
        with removed_on_failure(state):
            (state / "mqtt" / "pending").mkdir(parents=True)
            raise RuntimeError("capture failed")
    assert list(tmp_path.iterdir()) == [], "every folder the body made is gone, up to the first that existed"

    with pytest.raises(RuntimeError):
        with removed_on_failure(state):
            (state / "mqtt").mkdir(parents=True)
            (state / "rules.json").write_text("{}")
            raise RuntimeError("capture failed")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "var", "var/lib", "var/lib/iotguard", "var/lib/iotguard/rules.json"]  # fmt: skip

    with removed_on_failure(state):  # success, and a folder that existed: nothing removed
        (state / "mqtt").mkdir()
    assert (state / "mqtt").is_dir()


def test_stream_key_hashes_are_stable_and_order_sensitive():
    a, b = np.array([1, 2, 3], dtype=np.uint64), np.array([7, 7, 7], dtype=np.uint64)
    h1 = hash_words(5, a, b)
    assert np.array_equal(h1, hash_words(5, a.copy(), b.copy()))
    assert len(set(h1.tolist())) == 3
    assert not np.array_equal(h1, hash_words(5, b, a)) and not np.array_equal(h1, hash_words(6, a, b))

