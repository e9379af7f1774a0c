"""Firmware profiles: every shipped profile loads, and each kind of mistake is reported with file, key and problem."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from agent.profile import PROFILE_DIR, Profile, ProfileError, load_profile, shipped_profiles
from lab.config_fuzz import del_dotted, set_dotted

BOARDS = {
    "rpi-zero-2w": ("aarch64", 512),
    "rpi-3b": ("armv7l", 1024),
    "rpi-4b": ("aarch64", 4096),
    "beaglebone-black": ("armv7l", 512),
    "x86_64-gateway": ("x86_64", None),
}


def to_toml(data: dict) -> str:
    """Enough of a TOML writer for profiles: scalars, then one level of tables."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{k}]")
            lines += [f"{tk} = {value(tv)}" for tk, tv in table.items()]
    return "\n".join(lines) + "\n"


def base_profile(name: str = "rpi-zero-2w") -> dict:
    with open(PROFILE_DIR / f"{name}.toml", "rb") as fh:
        return tomllib.load(fh)


def write_profile(tmp_path: Path, data: dict, name: str | None = None) -> Path:
    path = tmp_path / f"{name or data.get('name', 'board')}.toml"
    path.write_text(to_toml(data))
    return path


def test_the_five_boards_are_shipped() -> None:
    assert set(shipped_profiles()) == set(BOARDS)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    arch, memory = BOARDS[name]
    assert isinstance(profile, Profile)
    assert profile.name == name and profile.arch == arch
    if memory is not None:
        assert profile.memory_mb == memory
    assert profile.estimated_memory_mb() <= profile.memory_budget_mb <= profile.memory_mb
    assert profile.threads <= profile.cores
    if arch == "armv7l":
        assert profile.runtime_preference() == ("tflite-runtime",)
    assert (profile.qemu is None) == (arch == "x86_64")


def test_name_and_path_give_the_same_profile() -> None:
    by_name = load_profile("rpi-3b")
    by_path = load_profile(PROFILE_DIR / "rpi-3b.toml")
    assert by_name == by_path


def test_round_trip_of_the_test_writer(tmp_path: Path) -> None:
    """The errors below come from the edits, not from the helper that writes the files."""
    path = write_profile(tmp_path, base_profile("beaglebone-black"))
    assert load_profile(path) == replace(load_profile("beaglebone-black"), path=path)


# (test id, edits to the Zero 2 W profile as {dotted key: value, or None to delete}, key reported, words in the problem)
BROKEN = [
    ("unknown key", {"batchsize": 256}, "batchsize", "unknown key"),
    ("unknown stream table", {"budgets.hp": 10}, "budgets.hp", "unknown stream table"),
    ("wrong type", {"cores": "4"}, "cores", "must be an integer, got string"),
    ("bool is not an int", {"batch_size": True}, "batch_size", "must be an integer, got boolean"),
    ("float is not an int", {"memory_mb": 512.0}, "memory_mb", "must be an integer, got float"),
    ("missing budgets table", {"budgets": None}, "budgets", "missing"),
    ("missing key", {"interface": None}, "interface", "missing"),
    ("missing budget", {"budgets.hh_jit": None}, "budgets.hh_jit", "missing"),
    ("negative budget", {"budgets.hphp": -5}, "budgets.hphp", "at least 1 entry, got -5"),
    ("batch size 0", {"batch_size": 0}, "batch_size", "between 1 and"),
    ("litert on armv7", {"arch": "armv7l", "qemu": "qemu-arm-static", "qemu_cpu": "cortex-a8"}, "runtime",
     "'ai-edge-litert' is not available for armv7l"),
    ("unknown runtime", {"runtime": "onnxruntime"}, "runtime", "unknown runtime"),
    ("memory budget above memory", {"memory_budget_mb": 1024}, "memory_budget_mb", "more than the board's memory_mb"),
    ("budgets do not fit", {"budgets.hphp": 4_000_000}, "memory_budget_mb", "too small for these budgets"),
    ("unknown arch", {"arch": "mips"}, "arch", "unknown architecture"),
    ("qemu for another arch", {"qemu": "qemu-arm-static"}, "qemu", "does not run aarch64"),
    ("threads above cores", {"threads": 8}, "threads", "between 1 and cores (4)"),
    ("unknown enforcement", {"enforcement": "iptables"}, "enforcement", "unknown backend"),
    ("name differs from file", {"name": "rpi-zero"}, "name", "differs from the file name"),
]


@pytest.mark.parametrize("edits, key, words", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_profile_names_file_key_and_problem(tmp_path: Path, edits: dict, key: str, words: str) -> None:
    data = base_profile()
    for dotted, value in edits.items():
        if value is None:
            del_dotted(data, dotted)
        else:
            set_dotted(data, dotted, value)
    path = write_profile(tmp_path, data, name="rpi-zero-2w")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.path == path
    assert err.value.key == key
    assert words in err.value.problem
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_budgets_given_as_a_value_not_a_table(tmp_path: Path) -> None:
    text = (PROFILE_DIR / "rpi-zero-2w.toml").read_text().split("[budgets]")[0] + "budgets = 5\n"
    path = tmp_path / "rpi-zero-2w.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=r"key 'budgets': must be a table, got integer 5"):
        load_profile(path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\ncores = \n')
    with pytest.raises(ProfileError, match="cannot read TOML") as err:
        load_profile(path)
    assert err.value.path == path


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match="no such profile") as err:
        load_profile("rpi-5")
    assert "rpi-zero-2w" in str(err.value)
    assert err.value.path == PROFILE_DIR / "rpi-5.toml"


def test_optional_keys_take_their_defaults(tmp_path: Path) -> None:
    data = base_profile()
    del data["threads"], data["description"]
    profile = load_profile(write_profile(tmp_path, data))
    assert profile.threads == 1 and profile.description == ""
