"""A private CA, broker and client certificates, and the mosquitto config + ACL that use them.

``write_pki`` lays out::

    OUT/ca.crt ca.key                 the fleet CA (keep ca.key offline)
    OUT/broker.crt broker.key         the broker's server certificate (SANs: hosts given)
    OUT/devices/NAME.crt NAME.key     one client certificate per device, CN = device name
    OUT/controllers/NAME.crt NAME.key one per controller replica, CN = controller name
    OUT/clients/homeassistant.crt .key  Home Assistant's (with ``discovery_prefix``: ``certs --home-assistant``)
    OUT/mosquitto.conf                TLS listener, require_certificate, use_identity_as_username
    OUT/broker-data/                  the broker's persistence (made as root: it and broker.key belong to the user
                                      mosquitto, which the broker drops to; every other key stays root's)
    OUT/acl                           per-user topic rules

With ``use_identity_as_username`` the certificate CN is the MQTT username, so
the ACL can say, per device: publish only your own alerts, status and rules
acks; read only your own and the fleet's rules, your model and the
confirmations of your alerts.  Controllers read and write everything under the
prefix.  Keys are EC P-256, files 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.wire import ALL_DEVICES, DEFAULT_PREFIX, NAME_RE, discovery_topics

CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity clients commonly accept for server certificates
BROKER_USER = "mosquitto"  # the user mosquitto drops to when started as root (its default `user`)
BROKER_DATA = "broker-data"  # the broker's persistence folder, the only one it writes
HOME_ASSISTANT = "homeassistant"  # the username (certificate CN) of Home Assistant's MQTT client


@dataclass
class Issued:
    cert: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotguard"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(common_name: str = "iotguard fleet CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, server: bool,
    hosts: tuple[str, ...] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate: a server one (with SANs for ``hosts``) or a client one."""
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def acl_text(prefix: str, fleet: str, devices: list[str], controllers: list[str],
             discovery_prefix: str | None = None) -> str:  # fmt: skip
    """mosquitto ACL: explicit entries per user (the username is the certificate CN).  With ``discovery_prefix``
    each device may publish its Home Assistant discovery configs, and the user ``homeassistant`` read them and
    the fleet's status (the entities' state)."""
    lines = ["# iotguard ACL: generated by `python -m controller certs`; users are certificate CNs.", ""]
    for name in controllers:
        lines += [f"user {name}", f"topic readwrite {prefix}/#", ""]
    if discovery_prefix is not None:
        lines += [f"user {HOME_ASSISTANT}", f"topic read {discovery_prefix}/#", f"topic read {prefix}/{fleet}/+/status", ""]
    for device in devices:
        base = f"{prefix}/{fleet}/{device}"
        lines += [
            f"user {device}",
            f"topic write {base}/alerts",
            f"topic write {base}/status",
            f"topic write {base}/rules/ack",
            f"topic read {base}/rules",
            f"topic read {prefix}/{fleet}/{ALL_DEVICES}/rules",
            f"topic read {base}/model",
            f"topic read {base}/alerts/ack",  # the controller's confirmations of stored alerts
        ]
        if discovery_prefix is not None:
            lines += [f"topic write {name}" for name in discovery_topics(discovery_prefix, fleet, device).values()]
        lines.append("")
    return "\n".join(lines)


def mosquitto_conf(out: Path, listen_host: str, port: int, persistence: bool = True) -> str:
    out = out.resolve()
    lines = [
        "# iotguard broker: TLS with client certificates only; generated by `python -m controller certs`.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {out / 'acl'}",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {out / BROKER_DATA}/",
        "max_queued_messages 100000",
        f"listener {port} {listen_host}",
        f"cafile {out / 'ca.crt'}",
        f"certfile {out / 'broker.crt'}",
        f"keyfile {out / 'broker.key'}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
    ]
    return "\n".join(lines) + "\n"


def write_pki(
    out: Path, devices: list[str], controllers: list[str], fleet: str = "default", prefix: str = DEFAULT_PREFIX,
    listen_host: str = "0.0.0.0", port: int = 8883, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    discovery_prefix: str | None = None,
) -> dict[str, Issued]:
    """Create everything in ``out``; returns name -> (cert, key) for the CA, broker, devices and controllers (and
    with ``discovery_prefix``, Home Assistant's client certificate in ``clients/``: see ``acl_text``)."""
    for name in [fleet, *devices, *controllers]:
        if not NAME_RE.match(name):
            raise ValueError(f"name {name!r} must match {NAME_RE.pattern}")
    if ALL_DEVICES in devices:
        raise ValueError(f"{ALL_DEVICES!r} cannot be a device name (it is the fleet-wide rules target)")
    clash = set(devices) & set(controllers)
    if clash:
        raise ValueError(f"names used for both a device and a controller: {', '.join(sorted(clash))}")
    out = Path(out)
    (out / "devices").mkdir(parents=True, exist_ok=True)
    (out / "controllers").mkdir(parents=True, exist_ok=True)
    issued: dict[str, Issued] = {}

    ca_key, ca_cert = make_ca()
    issued["ca"] = Issued(out / "ca.crt", out / "ca.key")
    _write_cert(issued["ca"].cert, ca_cert)
    _write_key(issued["ca"].key, ca_key)

    key, cert = issue(ca_key, ca_cert, "iotguard broker", server=True, hosts=hosts)
    issued["broker"] = Issued(out / "broker.crt", out / "broker.key")
    _write_cert(issued["broker"].cert, cert)
    _write_key(issued["broker"].key, key)

    clients = [HOME_ASSISTANT] if discovery_prefix is not None else []
    if HOME_ASSISTANT in clients and HOME_ASSISTANT in [*devices, *controllers]:
        raise ValueError(f"{HOME_ASSISTANT!r} is Home Assistant's certificate; choose another device or controller name")
    for folder, names in (("devices", devices), ("controllers", controllers), ("clients", clients)):
        for name in names:
            key, cert = issue(ca_key, ca_cert, name, server=False)
            (out / folder).mkdir(parents=True, exist_ok=True)
            issued[name] = Issued(out / folder / f"{name}.crt", out / folder / f"{name}.key")
            _write_cert(issued[name].cert, cert)
            _write_key(issued[name].key, key)

    (out / "acl").write_text(acl_text(prefix, fleet, devices, controllers, discovery_prefix))
    (out / "mosquitto.conf").write_text(mosquitto_conf(out, listen_host, port))
    (out / BROKER_DATA).mkdir(exist_ok=True)
    _hand_to_broker_user(issued["broker"].key, out / BROKER_DATA)
    return issued


def _hand_to_broker_user(*paths: Path) -> None:
    """Started as root, mosquitto drops to the user ``mosquitto`` before it reads its key and writes its data: made
    by root, those must be that user's (the CA key and the clients' keys stay root's).  Nothing to do otherwise."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(BROKER_USER)
    except KeyError:  # no mosquitto package here: whoever runs the broker owns the files already
        return
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)
