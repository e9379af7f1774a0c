"""What every traffic generator shares: the random generator, the LAN, the timeline and the clock.

Also the small helpers several generators need: ephemeral ports, round-trip
times, UDP exchanges, and DNS lookups with a per-client cache (so a device asks
for a name again only when the answer's TTL has run out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .frames import payload_matrix, udp_frames
from .network import Host, Lan
from .payloads import TYPE_A, TYPE_AAAA, dns_query, dns_response
from .timeline import BENIGN, Timeline


@dataclass
class Scene:
    rng: np.random.Generator
    lan: Lan
    timeline: Timeline
    seconds: float
    base_unix: float  # wall-clock time of the capture start (for NTP, JSON timestamps)
    link_bps: float = 100e6
    _dns_cache: dict[tuple[int, str], tuple[float, int]] = field(default_factory=dict)
    _dns_names: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (ip, ttl)
    _remotes: dict[int, Host] = field(default_factory=dict)

    def unix(self, t: float) -> float:
        return self.base_unix + t

    def ephemeral_port(self) -> int:
        return int(self.rng.integers(32768, 61000))

    def rtt(self, a: Host, b: Host) -> float:
        """Round trip between two hosts: sub-millisecond on the LAN, tens of ms to the Internet."""
        if a.local and b.local:
            return float(self.rng.uniform(0.0002, 0.002))
        return float(self.rng.uniform(0.012, 0.160))

    def remote_host(self, name: str, ip: int) -> Host:
        """The same remote address always maps to the same host (and TTL)."""
        if ip not in self._remotes:
            self._remotes[ip] = self.lan.remote(self.rng, name, ip)
        return self._remotes[ip]

    # ------------------------------------------------------------ UDP

    def udp(
        self,
        times: np.ndarray | list[float],
        src: Host,
        dst: Host,
        sport: int,
        dport: int,
        payloads: list[bytes],
        role: str,
        label: int | str = BENIGN,
        dst_mac: int | None = None,
        dst_ip: int | None = None,
        ip_id: int | np.ndarray | None = 0,
        df: bool = True,
        src_ip: int | None = None,
    ) -> None:
        """One UDP datagram per time.  ``ip_id=None`` counts up from a random start (connected socket)."""
        times = np.asarray(times, dtype=np.float64)
        if not len(times):
            return
        matrix, lengths = payload_matrix(payloads)
        if ip_id is None:
            ip_id = self.rng.integers(0, 1 << 16) + np.arange(len(times))
        frames = udp_frames(
            len(times),
            sport=sport,
            dport=dport,
            payload=matrix,
            payload_len=lengths,
            src_mac=src.mac,
            dst_mac=dst.mac if dst_mac is None else dst_mac,
            src_ip=src.ip if src_ip is None else src_ip,
            dst_ip=dst.ip if dst_ip is None else dst_ip,
            ttl=src.ttl,
            ip_id=ip_id,
            df=df,
            pad=not src.is_board,
        )
        self.timeline.add(times, frames, label, role)

    # ------------------------------------------------------------ DNS

    def name_ip(self, name: str) -> int:
        """The (stable) public address a host name resolves to in this scene."""
        from .network import random_public_ip

        if name not in self._dns_names:
            ttl = int(self.rng.choice([60, 300, 300, 600, 3600, 14400]))
            self._dns_names[name] = (random_public_ip(self.rng), ttl)
        return self._dns_names[name][0]

    def resolve(self, t: float, client: Host, name: str, ipv6: bool | None = None) -> tuple[float, Host]:
        """Look ``name`` up through the LAN's resolver (the gateway) unless cached; returns (time done, server)."""
        ip = self.name_ip(name)
        server = self.remote_host(name, ip)
        expires, _ = self._dns_cache.get((client.ip, name), (-1.0, 0))
        if t < expires:
            return t, server
        ttl = self._dns_names[name][1]
        resolver = self.lan.gateway
        sport = self.ephemeral_port()
        qtypes = [TYPE_A, TYPE_AAAA] if (ipv6 if ipv6 is not None else self.rng.random() < 0.4) else [TYPE_A]
        done = t
        upstream = float(self.rng.uniform(0.0005, 0.004)) if self.rng.random() < 0.6 else self.rtt(client, server)
        for k, qtype in enumerate(qtypes):
            txid = int(self.rng.integers(0, 1 << 16))
            t_q = t + k * float(self.rng.uniform(0.00002, 0.0002))
            answers = [ip.to_bytes(4, "big")] if qtype == TYPE_A else []
            cname = (
                f"edge-{int(self.rng.integers(1, 99))}.cdn-{name.split('.')[-2]}.net" if len(name) % 3 == 0 else None
            )
            query = dns_query(txid, name, qtype)
            reply = dns_response(txid, name, qtype, answers, ttl, cname)
            t_r = t_q + upstream + float(self.rng.gamma(2, 0.0002))
            self.udp([t_q], client, resolver, sport, 53, [query], "benign:dns", ip_id=0)
            self.udp([t_r], resolver, client, 53, sport, [reply], "benign:dns", ip_id=0)
            done = max(done, t_r)
        self._dns_cache[(client.ip, name)] = (t + ttl, ip)
        return done, server
