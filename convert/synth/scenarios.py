"""The scenario registry and ``synthesise``: a name, a duration and a seed in, a labelled capture out.

A scenario builds a LAN around the board, decides where the board captures
(``own``: its switch port, seeing its own traffic and broadcasts; ``mirror``:
a mirror port or hub, seeing the whole LAN), plans any attacks, then adds the
benign background and the attacks to one timeline.  Everything random comes
from one ``numpy.random.Generator`` seeded with (seed, CRC-32 of the scenario
name), drawn in a fixed order, so the same arguments give byte-identical files
and equal seeds in different scenarios still draw different addresses.
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent.capture.packets import LABELS, FrameBatch

from .attack import ATTACK_CLASSES, MAX_META_BOTS, AttackPlan, Target
from .beacons import FAMILIES, add_beacon_devices, discovery_beacons, draw_family_mix
from .benign import (
    device_profile,
    dhcp_join,
    firmware_download,
    lan_background,
    mqtt_session,
    ntp_client,
    page_loads,
    visitor_joins,
)
from .mirai import plan_attack, run_attack
from .network import ESP_OUIS, Host, ip_text, make_lan
from .options import OptionSpace
from .prior_contact import prior_contact
from .scene import Scene
from .timeline import Timeline

log = logging.getLogger(__name__)

# 2: discovery beacons, visitors, page loads; 3: bots' prior contact, victims' reply stacks;
# 4: every attack option over its real range (OptionSpace), scanner variants, the scanned board
GENERATOR_VERSION = 4
BASE_TIME_RANGE = (
    int(dt.datetime(2016, 1, 1, tzinfo=dt.UTC).timestamp()),
    int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()),
)
LABEL_POLICY = (
    "A packet carries a Mirai class when a bot sends it as part of that activity (floods; scan SYNs, the bot "
    "kernel's RSTs to SYN-ACKs, its telnet brute-force segments and its report to the loader). Packets innocent "
    "hosts send in reaction (victims' RSTs and ICMP errors, scanned hosts' SYN-ACK/RST and telnet output, the "
    "router's ARP for absent victims) are benign with role reply:<class>. Everything else is benign."
)


@dataclass
class Synthesised:
    frames: FrameBatch
    labels: np.ndarray  # int8 indices into agent.capture.packets.LABELS, one per record
    role_index: np.ndarray  # int32 indices into role_names
    role_names: tuple[str, ...]
    meta: dict
    ts_us: np.ndarray  # int64 exact microsecond timestamps (frames.ts is the same as float seconds)

    @property
    def roles(self) -> np.ndarray:
        return np.asarray(self.role_names, dtype=object)[self.role_index]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Setting:
    """What a scenario builder returns besides the traffic: for the metadata."""

    capture: str
    devices: dict[str, str] = field(default_factory=dict)  # device name -> kind
    attacks: list[AttackPlan] = field(default_factory=list)
    board_kind: str = "monitor"


# A builder gets (rng, seconds, base_unix, space): ``space`` bounds the options of every attack it plans.
Builder = Callable[[np.random.Generator, float, float, OptionSpace | None], tuple[Scene, Setting]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    build: Builder


SCENARIOS: dict[str, Scenario] = {}


def _register(name: str, description: str):
    def wrap(fn):
        SCENARIOS[name] = Scenario(name, description, fn)
        return fn

    return wrap


def _scene(
    rng: np.random.Generator, seconds: float, base_unix: float, *, public: bool, capture: str, board_kind: str
) -> Scene:
    lan = make_lan(rng, board_kind, public=public)
    only = lan.board.mac if capture == "own" else None
    link = float(rng.choice([100e6, 100e6, 1e9]))
    return Scene(rng, lan, Timeline(seconds, only_mac=only), seconds, base_unix, link_bps=link)


def _populate(scene: Scene, kinds: list[str]) -> dict[str, str]:
    """Add devices of the given kinds to the LAN (cameras with an NVR); returns name -> kind."""
    rng, lan = scene.rng, scene.lan
    devices: dict[str, str] = {}
    for i, kind in enumerate(kinds):
        name = f"{kind}{sum(k == kind for k in kinds[:i]) + 1}"
        ouis = ESP_OUIS if kind in ("plug", "sensor") else ()
        lan.add_device(rng, name, ouis, private_mac=kind == "phone")
        devices[name] = kind
    return devices


def _run_devices(scene: Scene, devices: dict[str, str], start: float, stop: float) -> None:
    lan = scene.lan
    peers = {k: h for k, h in (("nvr", lan.devices.get("nvr1")), ("hub", lan.devices.get("hub1"))) if h is not None}
    for name, kind in devices.items():
        if kind == "nvr":
            continue
        device_profile(scene, kind, lan.devices[name], start, stop, peers)


def _board_profile(scene: Scene, kind: str, peers: dict[str, Host]) -> None:
    device_profile(scene, kind, scene.lan.board, 0.0, scene.seconds, peers)


def _beacons(scene: Scene, setting: Setting) -> None:
    """0-12 extra devices of the home's vendor mix (and some of its plugs) broadcasting discovery beacons.

    Call before ``lan_background`` so the extra devices also ARP and renew their leases.
    """
    rng, lan = scene.rng, scene.lan
    mix = draw_family_mix(rng)
    devices = add_beacon_devices(scene, int(rng.integers(0, 13)), mix)
    plug_families = [f for f in mix if FAMILIES[f].kind == "plug"] or ["kasa", "tuya"]
    for name, kind in list(setting.devices.items()):
        if kind == "plug" and rng.random() < 0.5:
            devices.append((lan.devices[name], str(rng.choice(plug_families))))
    for host, family in devices:
        setting.devices.setdefault(host.name, f"{FAMILIES[family].kind}/{family}")
    phones = [lan.devices[n] for n, k in setting.devices.items() if k == "phone"]
    discovery_beacons(scene, devices, 0.0, scene.seconds, phones)


def _first_contacts(scene: Scene, setting: Setting) -> None:
    """Visitors joining the Wi-Fi, and the household's phones loading pages from many CDN hosts."""
    rng = scene.rng
    for host in visitor_joins(scene, 0.0, scene.seconds):
        setting.devices[host.name] = "visitor"
    for name, kind in list(setting.devices.items()):
        if kind == "phone":
            page_loads(scene, scene.lan.devices[name], 0.0, scene.seconds, float(rng.uniform(1 / 300, 1 / 60)))


# ---------------------------------------------------------------- benign scenarios


def _single_device(kind: str, extra: Callable[[Scene], None] | None = None):
    def build(rng: np.random.Generator, seconds: float, base_unix: float, space=None) -> tuple[Scene, Setting]:
        scene = _scene(rng, seconds, base_unix, public=False, capture="own", board_kind=kind)
        others = (
            ["phone", "plug"]
            + (["nvr"] if kind == "camera" and rng.random() < 0.7 else [])
            + (["hub"] if rng.random() < 0.5 else [])
        )
        devices = _populate(scene, others)
        peers = {k: scene.lan.devices[n] for n, k in devices.items() if k in ("nvr", "hub")}
        _board_profile(scene, kind, peers)
        if extra:
            extra(scene)
        setting = Setting("own", devices, board_kind=kind)
        _beacons(scene, setting)
        lan_background(scene, scene.lan.hosts(), 0.0, seconds)
        _first_contacts(scene, setting)
        return scene, setting

    return build


def _firmware_bursts(scene: Scene) -> None:
    rng = scene.rng
    for t in np.sort(rng.uniform(0, scene.seconds * 0.9, int(rng.integers(1, 4)))):
        firmware_download(
            scene,
            scene.lan.board,
            "ota.hearthlink-iot.com",
            float(t),
            int(rng.uniform(0.5e6, 12e6)),
            float(rng.uniform(5e6, 60e6)),
        )


_register(
    "camera", "the board is an IP camera: RTSP control, RTP/UDP video with keyframe bursts, cloud API, LAN chatter"
)(_single_device("camera"))
_register(
    "mqtt_sensor", "the board is a sensor publishing MQTT telemetry (1883 local or 8883 TLS cloud) with keepalive pings"
)(_single_device("sensor"))
_register("https_sync", "the board is a hub syncing with its cloud over HTTPS (TLS handshakes, requests, responses)")(
    _single_device("hub")
)
_register(
    "firmware_update", "the board downloads firmware images in high-rate bursts of full-size segments, plus telemetry"
)(_single_device("sensor", _firmware_bursts))


@_register("lan_services", "a quiet device booting: DHCP, ARP, DNS, NTP, SSDP and mDNS only, long idle periods")
def _lan_services(rng: np.random.Generator, seconds: float, base_unix: float, space=None) -> tuple[Scene, Setting]:
    scene = _scene(rng, seconds, base_unix, public=False, capture="own", board_kind="idle")
    devices = _populate(scene, ["phone", "plug", "hub"])
    board = scene.lan.board
    up = dhcp_join(scene, board, float(rng.uniform(0, 0.1 * seconds)), "iotguard")
    ntp_client(scene, board, up, seconds)
    setting = Setting("own", devices, board_kind="idle")
    _beacons(scene, setting)
    lan_background(scene, [h for h in scene.lan.hosts() if h is not board], 0.0, seconds)
    lan_background(scene, [scene.lan.gateway, board], up, seconds)  # the board talks once it has an address
    _first_contacts(scene, setting)
    return scene, setting


def _smart_home_devices(rng: np.random.Generator) -> list[str]:
    kinds = ["hub", "thermostat"] + ["camera"] * int(rng.integers(1, 3)) + ["nvr"]
    kinds += (
        ["plug"] * int(rng.integers(1, 5)) + ["sensor"] * int(rng.integers(0, 3)) + ["phone"] * int(rng.integers(1, 3))
    )
    return kinds


def _smart_home_scene(
    rng: np.random.Generator, seconds: float, base_unix: float, public: bool = False
) -> tuple[Scene, Setting]:
    scene = _scene(rng, seconds, base_unix, public=public, capture="mirror", board_kind="monitor")
    devices = _populate(scene, _smart_home_devices(rng))
    return scene, Setting("mirror", devices)


def _monitor_board(scene: Scene) -> None:
    """The board as a LAN monitor: NTP and its own status reports to the fleet controller over MQTT/TLS."""
    rng = scene.rng
    ntp_client(scene, scene.lan.board, 0.0, scene.seconds)
    controller = scene.remote_host("controller", scene.name_ip("mqtt.fleet-controller.net"))
    mqtt_session(
        scene,
        scene.lan.board,
        controller,
        float(rng.uniform(0, 2)),
        scene.seconds,
        tls=True,
        period=float(rng.choice([10.0, 30.0, 60.0])),
    )


def _household(scene: Scene, setting: Setting, seconds: float, infected_as: str = "sensor") -> None:
    """The benign life of the LAN, in a fixed order (so seeds stay reproducible): the monitoring board,
    every device, infected ones still doing what they were bought for, beacons, LAN chatter, newcomers."""
    _monitor_board(scene)
    _run_devices(scene, {n: k for n, k in setting.devices.items() if k != "infected"}, 0.0, seconds)
    for name, kind in setting.devices.items():
        if kind == "infected":
            device_profile(scene, infected_as, scene.lan.devices[name], 0.0, seconds, {})
    _beacons(scene, setting)
    lan_background(scene, scene.lan.hosts(), 0.0, seconds)
    _first_contacts(scene, setting)


@_register(
    "smart_home", "a household seen from a monitoring board on a mirror port: cameras, plugs, sensors, hub, phones"
)
def _smart_home(rng: np.random.Generator, seconds: float, base_unix: float, space=None) -> tuple[Scene, Setting]:
    scene, setting = _smart_home_scene(rng, seconds, base_unix)
    _household(scene, setting, seconds)
    return scene, setting


# ---------------------------------------------------------------- Mirai scenarios


def _attack_window(rng: np.random.Generator, start: float, stop: float) -> tuple[float, float]:
    """The attack runs inside [start, stop) with benign-only time before and after it."""
    span = stop - start
    a = start + span * float(rng.uniform(0.1, 0.3))
    return a, a + span * float(rng.uniform(0.4, 0.65))


PRIOR_CONTACT_SHARE = 0.45  # floods whose bots talked to their victim before


def _attack_with_history(scene: Scene, plan: AttackPlan) -> None:
    """Run the attack; for a share of floods, the bots first exchange ordinary traffic with the victim."""
    rng = scene.rng
    if plan.kind != "mirai_scan" and plan.targets and rng.random() < PRIOR_CONTACT_SHARE:
        for i, bot in enumerate(plan.bots):
            if i and rng.random() < 0.5:
                continue
            victim = _victim_host(scene, plan.targets[int(rng.integers(len(plan.targets)))])
            if victim is not None and victim.ip != bot.host.ip:
                contact = prior_contact(scene, bot.host, victim, plan.start, plan.stop, plan.replies)
                plan.prior_contacts.append({"bot_name": bot.name, **contact})
    run_attack(scene, plan)


def _victim_host(scene: Scene, target: Target) -> Host | None:
    """One host the target covers: a LAN host (the board more often), else a remote one."""
    rng, lan = scene.rng, scene.lan
    local = [h for h in lan.hosts() if h.ip >> (32 - target.prefix) == target.ip >> (32 - target.prefix)]
    if target.prefix < 32 and local:
        return lan.board if lan.board in local and rng.random() < 0.6 else local[int(rng.integers(len(local)))]
    if local:
        return local[0]
    spread = int(rng.integers(0, 1 << (32 - target.prefix))) if target.prefix < 32 else 0
    return scene.remote_host("victim", target.ip + spread)


def _mirai_bot(kind: str):
    def build(rng: np.random.Generator, seconds: float, base_unix: float, space=None) -> tuple[Scene, Setting]:
        board_kind = str(rng.choice(["camera", "sensor", "hub"]))
        scene = _scene(rng, seconds, base_unix, public=rng.random() < 0.2, capture="own", board_kind=board_kind)
        devices = _populate(scene, ["phone", "plug"] + (["nvr"] if board_kind == "camera" else []))
        start, stop = _attack_window(rng, 0.0, seconds)
        plan = plan_attack(scene, kind, "bot", start, stop, space=space)
        peers = {k: scene.lan.devices[n] for n, k in devices.items() if k == "nvr"}
        _board_profile(scene, board_kind, peers)
        setting = Setting("own", devices, [plan], board_kind)
        _beacons(scene, setting)
        lan_background(scene, scene.lan.hosts(), 0.0, seconds)
        _first_contacts(scene, setting)
        _attack_with_history(scene, plan)
        return scene, setting

    return build


def _mirai_victim(kind: str):
    def build(rng: np.random.Generator, seconds: float, base_unix: float, space=None) -> tuple[Scene, Setting]:
        public = rng.random() < (0.3 if kind == "mirai_scan" else 0.5)
        scene, setting = _smart_home_scene(rng, seconds, base_unix, public=public)
        start, stop = _attack_window(rng, 0.0, seconds)
        neighbours = [scene.lan.devices[n] for n, k in setting.devices.items() if k in ("camera", "nvr")]
        bot_hosts = neighbours[:1] if kind == "mirai_scan" else None
        plan = plan_attack(scene, kind, "victim", start, stop, bot_hosts=bot_hosts, space=space)
        for bot in plan.bots:  # infected LAN devices keep their normal traffic too
            if bot.host.local and bot.host.name not in setting.devices:
                setting.devices[bot.host.name] = "infected"
        # The board sees the attack on its own port when it is the only target, else through the mirror port.
        if (
            plan.targets
            and all(t.prefix == 32 and t.ip == scene.lan.board.ip for t in plan.targets)
            and rng.random() < 0.6
        ):
            scene.timeline.only_mac = scene.lan.board.mac
            setting.capture = "own"
        _household(scene, setting, seconds, infected_as="camera")
        _attack_with_history(scene, plan)
        setting.attacks.append(plan)
        _internet_scanners(scene, setting, space)
        return scene, setting

    return build


INTERNET_SCANNING_SHARE = 0.5  # public LANs under attack that also show the Internet's scanners probing the board


def _internet_scanners(scene: Scene, setting: Setting, space: OptionSpace | None) -> None:
    """A board with a public address meets Mirai's scanners all day: sometimes add them to a victim's capture."""
    if scene.lan.public and scene.rng.random() < INTERNET_SCANNING_SHARE:
        plan = plan_attack(scene, "mirai_scan", "scanned", 0.0, scene.seconds, space=space)
        run_attack(scene, plan)
        setting.attacks.append(plan)


def _mirai_scanned(rng: np.random.Generator, seconds: float, base_unix: float, space=None) -> tuple[Scene, Setting]:
    """The board reachable from the Internet, probed by many scanning bots, over one of two backgrounds:
    a device with its own traffic on its switch port, or the monitoring board of a household on a mirror port."""
    public = rng.random() < 0.5  # else a private LAN whose router forwards ports to the board, or its DMZ
    if rng.random() < 0.5:
        board_kind = str(rng.choice(["camera", "sensor", "hub"]))
        scene = _scene(rng, seconds, base_unix, public=public, capture="own", board_kind=board_kind)
        devices = _populate(scene, ["phone", "plug"] + (["nvr"] if board_kind == "camera" else []))
        plan = plan_attack(scene, "mirai_scan", "scanned", 0.0, seconds, space=space)
        _board_profile(scene, board_kind, {k: scene.lan.devices[n] for n, k in devices.items() if k == "nvr"})
        setting = Setting("own", devices, [plan], board_kind)
        _beacons(scene, setting)
        lan_background(scene, scene.lan.hosts(), 0.0, seconds)
        _first_contacts(scene, setting)
    else:
        scene, setting = _smart_home_scene(rng, seconds, base_unix, public=public)
        plan = plan_attack(scene, "mirai_scan", "scanned", 0.0, seconds, space=space)
        setting.attacks.append(plan)
        _household(scene, setting, seconds)
    run_attack(scene, plan)
    return scene, setting


_VIEW_TEXT = {
    "bot": "the board is infected and sends it (sender capture, no Ethernet padding), over its own benign traffic",
    "victim": "the board or its LAN is attacked (receiver capture, padded frames), over a smart-home background",
}
_OPTIONS_TEXT = {"flood": "; options drawn over Mirai's whole range", "scan": "; Mirai's scanner or a descendant's"}
for _kind in ATTACK_CLASSES:
    for _view, _builder in (("bot", _mirai_bot), ("victim", _mirai_victim)):
        what = "telnet scan + brute force" if _kind == "mirai_scan" else _kind.replace("mirai_", "") + " flood"
        text = (
            _VIEW_TEXT[_view]
            if not (_kind == "mirai_scan" and _view == "victim")
            else (
                "an infected LAN neighbour scans, seen through a mirror port (padded frames), over a smart-home background"
            )
        )
        options_text = _OPTIONS_TEXT["scan" if _kind == "mirai_scan" else "flood"]
        _register(f"{_kind}_{_view}", f"Mirai {what}: {text}{options_text}")(_builder(_kind))
_register(
    "mirai_scan_scanned",
    "Mirai scanners probe the board's reachable address (public, DMZ or port forward): many bots, 1-3 SYNs each, "
    "the board's answers and some telnet brute force, over a device's or a household's traffic",
)(_mirai_scanned)


@_register("mixed", "smart-home background with each Mirai class in turn (bot or victim view), idle gaps between")
def _mixed(rng: np.random.Generator, seconds: float, base_unix: float, space=None) -> tuple[Scene, Setting]:
    scene, setting = _smart_home_scene(rng, seconds, base_unix)
    lead = seconds * 0.06
    slot = (seconds - lead) / len(ATTACK_CLASSES)
    order = list(rng.permutation(ATTACK_CLASSES))
    neighbours = [scene.lan.devices[n] for n, k in setting.devices.items() if k == "camera"]
    for i, kind in enumerate(order):
        view = "bot" if rng.random() < 0.5 else "victim"
        a = lead + i * slot + slot * float(rng.uniform(0.05, 0.2))
        b = a + slot * float(rng.uniform(0.55, 0.75))
        bots = neighbours[:1] if kind == "mirai_scan" else None
        setting.attacks.append(plan_attack(scene, str(kind), view, a, b, bot_hosts=bots, space=space))
    for plan in setting.attacks:
        for bot in plan.bots:
            if bot.host.local and not bot.host.is_board and bot.host.name not in setting.devices:
                setting.devices[bot.host.name] = "infected"
    _household(scene, setting, seconds, infected_as="sensor")
    for plan in setting.attacks:
        _attack_with_history(scene, plan)
    return scene, setting


# ---------------------------------------------------------------- entry point


def synthesise(scenario: str, seconds: float, seed: int, options: OptionSpace | None = None) -> Synthesised:
    """Generate ``seconds`` of the named scenario; the same arguments always give the same capture.

    ``options`` bounds the options of every attack in the scenario (values held out, values forced);
    None draws them over Mirai's whole range.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from: {', '.join(sorted(SCENARIOS))}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if options is not None and not isinstance(options, OptionSpace):
        raise ValueError(f"options must be a convert.synth.OptionSpace or None, got {type(options).__name__}")
    # The scenario's name joins the seed, so equal seeds in different scenarios draw different addresses.
    rng = np.random.default_rng([int(seed), zlib.crc32(scenario.encode())])
    base_us = int(rng.integers(BASE_TIME_RANGE[0], BASE_TIME_RANGE[1])) * 1_000_000 + int(rng.integers(0, 1_000_000))
    scene, setting = SCENARIOS[scenario].build(rng, float(seconds), base_us / 1e6, options)
    merged = scene.timeline.merge(base_us)
    ts_us = np.round(merged.frames.ts * 1e6).astype(np.int64)
    meta = _meta(scenario, seconds, seed, base_us, scene, setting, merged.labels, merged.role_index, merged.roles)
    if options is not None:
        meta["option_space"] = repr(options)
    return Synthesised(merged.frames, merged.labels, merged.role_index, merged.roles, meta, ts_us)


def _meta(scenario, seconds, seed, base_us, scene: Scene, setting: Setting, labels, role_index, roles) -> dict:
    lan = scene.lan
    attackers, victims = [], []
    for plan in setting.attacks:
        for bot in plan.bots[:MAX_META_BOTS]:  # a scanned board meets thousands: the plan's meta has the count
            attackers.append(
                {"class": plan.kind, "source": "spoofed" if bot.spoof else bot.host.ip_text, "bot": bot.name}
            )
        if plan.kind != "mirai_scan":
            victims += [t.text for t in plan.targets]
        elif plan.view == "scanned":
            victims.append(f"{ip_text(plan.scanned_ip)} (the board, scanned; reach: {plan.reach})")
        else:
            victims.append("random public IPv4 (scan)")
    per_label = (
        np.bincount(labels.astype(np.int64), minlength=len(LABELS)) if len(labels) else np.zeros(len(LABELS), int)
    )
    per_role = np.bincount(role_index, minlength=len(roles)) if len(roles) else []
    return {
        "scenario": scenario,
        "description": SCENARIOS[scenario].description,
        "seed": int(seed),
        "seconds": float(seconds),
        "generator_version": GENERATOR_VERSION,
        "base_time_unix_us": int(base_us),
        "base_time": dt.datetime.fromtimestamp(base_us / 1e6, tz=dt.UTC).isoformat(),
        "board": {
            "name": lan.board.name,
            "kind": setting.board_kind,
            "mac": lan.board.mac_text,
            "ip": lan.board.ip_text,
        },
        "gateway": {"mac": lan.gateway.mac_text, "ip": lan.gateway.ip_text},
        "lan": {"cidr": lan.cidr, "public": lan.public, "link_bps": scene.link_bps},
        "capture": setting.capture,
        "devices": [
            {"name": n, "kind": setting.devices.get(n, "device"), "mac": h.mac_text, "ip": h.ip_text}
            for n, h in lan.devices.items()
        ],
        "attacks": [p.meta() for p in setting.attacks],
        "attackers": attackers,
        "victims": victims,
        "packets": len(labels),
        "packets_per_label": {name: int(c) for name, c in zip(LABELS, per_label)},
        "packets_per_role": {r: int(c) for r, c in zip(roles, per_role)},
        "label_policy": LABEL_POLICY,
    }
