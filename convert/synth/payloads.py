"""Application payloads of benign IoT protocols and of Mirai's telnet brute force, as bytes.

Only what a capture shows: real message structure (so dpkt and Wireshark decode
it) and realistic sizes.  Encrypted content (TLS) is random bytes behind a real
record header.  Fixed headers are declared as layouts, like the L2-L4 ones.
"""

from __future__ import annotations

import struct

import numpy as np

from agent.capture.headers import Field, Header

from .frames import pack

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

# ---------------------------------------------------------------- DNS and mDNS

DNS_HEADER = Header("dns", (
    Field("id", "H"),
    Field("flags", "H", 0x0100),
    Field("qd", "H", 1),
    Field("an", "H"),
    Field("ns", "H"),
    Field("ar", "H"),
))
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_AAAA, TYPE_SRV = 1, 12, 16, 28, 33


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"


def _rr(name: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = 1) -> bytes:
    return name + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def dns_query(txid: int, name: str, qtype: int = TYPE_A) -> bytes:
    return pack(DNS_HEADER, 1, id=txid).tobytes() + dns_name(name) + struct.pack(">HH", qtype, 1)


def dns_response(txid: int, name: str, qtype: int, addresses: list[bytes], ttl: int, cname: str | None = None) -> bytes:
    """A recursive resolver's answer: optional CNAME, then one record per address (4 or 16 bytes)."""
    question = dns_name(name) + struct.pack(">HH", qtype, 1)
    answers = []
    owner = b"\xc0\x0c"  # pointer to the question name
    if cname:
        answers.append(_rr(owner, 5, ttl, dns_name(cname)))
        owner = dns_name(cname)
    answers += [_rr(owner, qtype, ttl, a) for a in addresses]
    header = pack(DNS_HEADER, 1, id=txid, flags=0x8180, an=len(answers)).tobytes()
    return header + question + b"".join(answers)


def mdns_query(services: list[str]) -> bytes:
    header = pack(DNS_HEADER, 1, id=0, flags=0, qd=len(services)).tobytes()
    return header + b"".join(dns_name(s) + struct.pack(">HH", TYPE_PTR, 1) for s in services)


def mdns_announce(service: str, instance: str, host: str, ip: int, port: int, txt: list[str]) -> bytes:
    """An mDNS response: PTR, SRV, TXT and A records, cache-flush bit on the unique ones."""
    inst = f"{instance}.{service}"
    txt_data = b"".join(bytes([len(x)]) + x.encode() for x in txt) or b"\0"
    records = [
        _rr(dns_name(service), TYPE_PTR, 4500, dns_name(inst)),
        _rr(dns_name(inst), TYPE_SRV, 120, struct.pack(">HHH", 0, 0, port) + dns_name(host), rclass=0x8001),
        _rr(dns_name(inst), TYPE_TXT, 4500, txt_data, rclass=0x8001),
        _rr(dns_name(host), TYPE_A, 120, struct.pack(">I", ip), rclass=0x8001),
    ]
    return pack(DNS_HEADER, 1, id=0, flags=0x8400, qd=0, an=len(records)).tobytes() + b"".join(records)


# ---------------------------------------------------------------- NTP

NTP = Header("ntp", (
    Field("li_vn_mode", "B", 0x23),  # LI 0, version 4, mode 3 (client); 0x24 for the server's reply
    Field("stratum", "B"),
    Field("poll", "B", 6),
    Field("precision", "B", 0xE9),  # -23 as a signed byte
    Field("root_delay", "I"),
    Field("root_dispersion", "I"),
    Field("ref_id", "I"),
    Field("ref_ts", "Q"),
    Field("orig_ts", "Q"),
    Field("recv_ts", "Q"),
    Field("xmit_ts", "Q"),
))


def ntp_timestamp(unix_seconds: float) -> int:
    secs = int(unix_seconds) + NTP_EPOCH_OFFSET
    return (secs << 32) | int((unix_seconds % 1) * (1 << 32))


def ntp_request(unix_now: float, poll: int) -> bytes:
    return pack(NTP, 1, poll=poll, xmit_ts=ntp_timestamp(unix_now)).tobytes()


def ntp_reply(client_xmit: float, recv: float, xmit: float, stratum: int, ref_id: int, poll: int) -> bytes:
    return pack(
        NTP,
        1,
        li_vn_mode=0x24,
        stratum=stratum,
        poll=poll,
        precision=0xE7,
        root_delay=0x0000_0A00 + int(recv * 7) % 0x600,
        root_dispersion=0x0000_0200 + int(recv * 3) % 0x300,
        ref_id=ref_id,
        ref_ts=ntp_timestamp(recv - 20.5),
        orig_ts=ntp_timestamp(client_xmit),
        recv_ts=ntp_timestamp(recv),
        xmit_ts=ntp_timestamp(xmit),
    ).tobytes()


# ---------------------------------------------------------------- DHCP

BOOTP = Header("bootp", (
    Field("op", "B", 1),
    Field("htype", "B", 1),
    Field("hlen", "B", 6),
    Field("hops", "B"),
    Field("xid", "I"),
    Field("secs", "H"),
    Field("flags", "H"),
    Field("ciaddr", "I"),
    Field("yiaddr", "I"),
    Field("siaddr", "I"),
    Field("giaddr", "I"),
    Field("chaddr", "6s"),
    Field("chaddr_pad", "10s", b""),
    Field("sname", "64s", b""),
    Field("file", "128s", b""),
    Field("magic", "I", 0x63825363),
))
DHCPDISCOVER, DHCPOFFER, DHCPREQUEST, DHCPACK = 1, 2, 3, 5


def _opt(code: int, data: bytes) -> bytes:
    return bytes([code, len(data)]) + data


def dhcp_message(
    msg_type: int,
    xid: int,
    mac: int,
    *,
    hostname: str = "",
    ciaddr: int = 0,
    yiaddr: int = 0,
    requested: int = 0,
    server: int = 0,
    router: int = 0,
    lease: int = 86400,
) -> bytes:
    """A DHCP message as an ISC/dnsmasq server or a Linux/embedded client sends it, padded to 300 bytes."""
    op = 2 if msg_type in (DHCPOFFER, DHCPACK) else 1
    fixed = pack(BOOTP, 1, op=op, xid=xid, ciaddr=ciaddr, yiaddr=yiaddr, chaddr=mac).tobytes()
    opts = _opt(53, bytes([msg_type]))
    if op == 1:
        opts += _opt(61, b"\x01" + mac.to_bytes(6, "big"))
        if requested:
            opts += _opt(50, struct.pack(">I", requested))
        if server:
            opts += _opt(54, struct.pack(">I", server))
        opts += _opt(57, struct.pack(">H", 576))
        if hostname:
            opts += _opt(12, hostname.encode())
        opts += _opt(55, bytes([1, 3, 6, 12, 15, 28, 42]))
    else:
        opts += _opt(54, struct.pack(">I", server))
        opts += _opt(51, struct.pack(">I", lease)) + _opt(58, struct.pack(">I", lease // 2))
        opts += _opt(59, struct.pack(">I", lease * 7 // 8))
        opts += _opt(1, struct.pack(">I", 0xFFFFFF00)) + _opt(28, struct.pack(">I", router | 0xFF))
        opts += _opt(3, struct.pack(">I", router)) + _opt(6, struct.pack(">I", router))
    body = fixed + opts + b"\xff"
    return body.ljust(300, b"\0")


# ---------------------------------------------------------------- SSDP (UPnP discovery)


def ssdp_msearch(st: str, mx: int) -> bytes:
    return (
        f'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: {mx}\r\nST: {st}\r\n\r\n'
    ).encode()


def ssdp_notify(location: str, nt: str, uuid: str, server: str) -> bytes:
    usn = f"uuid:{uuid}" + (f"::{nt}" if not nt.startswith("uuid:") else "")
    return (
        "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
        f"LOCATION: {location}\r\nNT: {nt}\r\nNTS: ssdp:alive\r\nSERVER: {server}\r\nUSN: {usn}\r\n\r\n"
    ).encode()


def ssdp_response(location: str, st: str, uuid: str, server: str) -> bytes:
    return (
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\n"
        f"LOCATION: {location}\r\nSERVER: {server}\r\nST: {st}\r\nUSN: uuid:{uuid}::{st}\r\n\r\n"
    ).encode()


# ---------------------------------------------------------------- MQTT 3.1.1


def _mqtt_len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(raw)) + raw


def _mqtt(first: int, body: bytes) -> bytes:
    return bytes([first]) + _mqtt_len(len(body)) + body


def mqtt_connect(client_id: str, keepalive: int, username: str = "") -> bytes:
    flags = 0x02 | (0xC0 if username else 0)  # clean session (+ username and password)
    body = _mqtt_str("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + _mqtt_str(client_id)
    if username:
        body += _mqtt_str(username) + _mqtt_str("x" * 24)
    return _mqtt(0x10, body)


def mqtt_connack() -> bytes:
    return b"\x20\x02\x00\x00"


def mqtt_subscribe(packet_id: int, topic: str, qos: int = 1) -> bytes:
    return _mqtt(0x82, struct.pack(">H", packet_id) + _mqtt_str(topic) + bytes([qos]))


def mqtt_suback(packet_id: int, qos: int = 1) -> bytes:
    return _mqtt(0x90, struct.pack(">H", packet_id) + bytes([qos]))


def mqtt_publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    body = _mqtt_str(topic) + (struct.pack(">H", packet_id) if qos else b"") + payload
    return _mqtt(0x30 | (qos << 1), body)


def mqtt_puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack(">H", packet_id)


MQTT_PINGREQ = b"\xc0\x00"
MQTT_PINGRESP = b"\xd0\x00"


def telemetry_json(rng: np.random.Generator, device: str, seq: int, unix_now: float) -> bytes:
    """A sensor reading as IoT devices publish them: small JSON, a few fields, low entropy."""
    fields = {
        "id": device,
        "seq": seq,
        "ts": int(unix_now),
        "temp": round(float(rng.normal(21.5, 1.5)), 2),
        "hum": round(float(rng.uniform(30, 60)), 1),
    }
    if rng.random() < 0.5:
        fields["power_w"] = round(float(rng.gamma(2.0, 20.0)), 1)
        fields["relay"] = "on" if rng.random() < 0.6 else "off"
    if rng.random() < 0.2:
        fields["rssi"] = int(rng.integers(-85, -40))
    return ("{" + ",".join(f'"{k}":{v!r}'.replace("'", '"') for k, v in fields.items()) + "}").encode()


# ---------------------------------------------------------------- TLS


def tls_record(rng: np.random.Generator, content_type: int, body_len: int, version: int = 0x0303) -> bytes:
    """A TLS record: real 5-byte header, opaque body (handshake bodies start with their type byte)."""
    body = rng.bytes(body_len)
    if content_type == 22 and body_len:
        body = bytes([1 if version == 0x0301 else 2]) + body[1:]
    return struct.pack(">BHH", content_type, version, body_len) + body


TLS_MAX_PLAINTEXT = 16384
TLS_AEAD_OVERHEAD = 24  # TLS 1.2 AES-GCM: 8-byte explicit nonce + 16-byte tag


def tls_app_data(rng: np.random.Generator, plaintext_len: int) -> bytes:
    """Application data as TLS 1.2 AES-GCM records of at most 16 KiB plaintext each."""
    sizes = [TLS_MAX_PLAINTEXT] * (plaintext_len // TLS_MAX_PLAINTEXT) + [plaintext_len % TLS_MAX_PLAINTEXT]
    return b"".join(tls_record(rng, 23, size + TLS_AEAD_OVERHEAD) for size in sizes if size)


def tls_stream_headers(stream_len: int) -> list[tuple[int, bytes]]:
    """(offset, header) of each record when ``stream_len`` bytes of TLS application data are cut into full records."""
    full = TLS_MAX_PLAINTEXT + TLS_AEAD_OVERHEAD + 5
    out = []
    for offset in range(0, stream_len, full):
        body = min(full, stream_len - offset) - 5
        if body > 0:
            out.append((offset, struct.pack(">BHH", 23, 0x0303, body)))
    return out


# ---------------------------------------------------------------- RTSP


def rtsp_request(method: str, url: str, cseq: int, extra: str = "", session: str = "") -> bytes:
    lines = [
        f"{method} {url} RTSP/1.0",
        f"CSeq: {cseq}",
        "User-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)",
    ]
    if session:
        lines.append(f"Session: {session}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rtsp_response(cseq: int, extra: str = "", body: str = "", session: str = "") -> bytes:
    lines = ["RTSP/1.0 200 OK", f"CSeq: {cseq}", "Date: Mon, Jan 01 2024 00:00:00 GMT"]
    if session:
        lines.append(f"Session: {session};timeout=60")
    if extra:
        lines.append(extra)
    if body:
        lines += ["Content-Type: application/sdp", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sdp(camera_ip: str) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {camera_ip}\r\ns=Media Presentation\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1;profile-level-id=4D0029;sprop-parameter-sets=Z00AKZpmA8ARPyzUBAQFAAADAAEAAAMAKIQ=,aO48gA==\r\n"
        "a=control:trackID=1\r\n"
    )


# ---------------------------------------------------------------- telnet (Mirai's brute force)

# Mirai's scanner credential table (bot/scanner.c): (username, password, weight); 62 entries.
MIRAI_CREDENTIALS: tuple[tuple[str, str, int], ...] = (
    ("root", "xc3511", 10),
    ("root", "vizxv", 9),
    ("root", "admin", 8),
    ("admin", "admin", 7),
    ("root", "888888", 6),
    ("root", "xmhdipc", 5),
    ("root", "default", 5),
    ("root", "juantech", 5),
    ("root", "123456", 5),
    ("root", "54321", 5),
    ("support", "support", 5),
    ("root", "", 4),
    ("admin", "password", 4),
    ("root", "root", 4),
    ("root", "12345", 4),
    ("user", "user", 3),
    ("admin", "", 3),
    ("root", "pass", 3),
    ("admin", "admin1234", 3),
    ("root", "1111", 3),
    ("admin", "smcadmin", 3),
    ("admin", "1111", 2),
    ("root", "666666", 2),
    ("root", "password", 2),
    ("root", "1234", 2),
    ("root", "klv123", 1),
    ("Administrator", "admin", 1),
    ("service", "service", 1),
    ("supervisor", "supervisor", 1),
    ("guest", "guest", 1),
    ("guest", "12345", 1),
    ("guest", "12345", 1),
    ("admin1", "password", 1),
    ("administrator", "1234", 1),
    ("666666", "666666", 1),
    ("888888", "888888", 1),
    ("ubnt", "ubnt", 1),
    ("root", "klv1234", 1),
    ("root", "Zte521", 1),
    ("root", "hi3518", 1),
    ("root", "jvbzd", 1),
    ("root", "anko", 4),
    ("root", "zlxx.", 1),
    ("root", "7ujMko0vizxv", 1),
    ("root", "7ujMko0admin", 1),
    ("root", "system", 1),
    ("root", "ikwb", 1),
    ("root", "dreambox", 1),
    ("root", "user", 1),
    ("root", "realtek", 1),
    ("root", "00000000", 1),
    ("admin", "1111111", 1),
    ("admin", "1234", 1),
    ("admin", "12345", 1),
    ("admin", "54321", 1),
    ("admin", "123456", 1),
    ("admin", "7ujMko0admin", 1),
    ("admin", "1234", 1),
    ("admin", "pass", 1),
    ("admin", "meinsm", 1),
    ("tech", "tech", 1),
    ("mother", "fucker", 1),
)

# What a busybox telnetd sends first: DO ECHO, DO NAWS, WILL ECHO, WILL SGA.
TELNETD_IACS = bytes([255, 253, 1, 255, 253, 31, 255, 251, 1, 255, 251, 3])


def mirai_iac_answers(server_iacs: bytes) -> list[bytes]:
    """Mirai's replies to telnet negotiation (scanner.c consume_iacs): each a separate send().

    DO NAWS gets WILL NAWS plus a window size of 80x24; any other DO becomes
    WONT and any WILL becomes DO.
    """
    out = []
    for i in range(0, len(server_iacs) - 2, 3):
        verb, opt = server_iacs[i + 1], server_iacs[i + 2]
        if verb == 253 and opt == 31:
            out += [bytes([255, 251, 31]), bytes([255, 250, 31, 0, 80, 0, 24, 255, 240])]
        else:
            out.append(bytes([255, {253: 252, 251: 253}.get(verb, verb), opt]))
    return out


# ---------------------------------------------------------------- RTP / RTCP (camera video)

RTP = Header("rtp", (
    Field("v_p_x_cc", "B", 0x80),  # version 2, no padding, no extension, no CSRC
    Field("m_pt", "B", 96),  # marker bit (last packet of a video frame) | payload type
    Field("seq", "H"),
    Field("ts", "I"),  # 90 kHz media clock
    Field("ssrc", "I"),
))


def rtcp_sender_report(ssrc: int, unix_now: float, rtp_ts: int, packets: int, octets: int, cname: str) -> bytes:
    sr = struct.pack(">BBHIQIII", 0x80, 200, 6, ssrc, ntp_timestamp(unix_now), rtp_ts & 0xFFFFFFFF, packets, octets)
    item = bytes([1, len(cname)]) + cname.encode()
    chunk = struct.pack(">I", ssrc) + item + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return sr + struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk


def rtcp_receiver_report(ssrc: int, source: int, highest_seq: int, jitter: int) -> bytes:
    block = struct.pack(">IIIIII", source, 0, highest_seq & 0xFFFFFFFF, jitter, 0, 0)
    return struct.pack(">BBHI", 0x81, 201, 7, ssrc) + block
