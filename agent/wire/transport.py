"""How agents and controllers connect to the broker: one paho client factory for both ends."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def make_client(client_id: str, protocol: str, tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None,
                username: str | None = None, password: str | None = None, manual_ack: bool = False,
                persistent_session: bool = False) -> mqtt.Client:
    """A paho 2 client with TLS and credentials set up.

    ``persistent_session`` only matters for MQTT 3.1.1 here; MQTT 5 sets it at connect time.
    """
    v5 = protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent_session,
        manual_ack=manual_ack,
    )
    if tls_ca is not None:
        client.tls_set(
            ca_certs=str(tls_ca),
            certfile=str(tls_cert) if tls_cert else None,
            keyfile=str(tls_key) if tls_key else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if username is not None:
        client.username_pw_set(username, password)
    return client
