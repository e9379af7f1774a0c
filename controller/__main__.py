"""Command line of the fleet controller: python -m controller COMMAND (or iotguard-controller COMMAND).

    keygen      make the Ed25519 key that signs rule sets and models
    certs       make a CA, broker/device/controller certificates, mosquitto.conf and ACL
    run         run a controller replica (starts its own broker when --broker is not given)
    migrate     bring the database's schema to this version (what run does at start) and print it
    devices     list devices, online/offline
    alerts      list recent alerts
    rules       list rule set versions and how many devices applied them
    block       block an address or CIDR fleet-wide (signed, published retained)
    unblock     lift a block
    push-model  sign and send a model bundle to devices
    token       create, list or revoke access tokens of the dashboard, its API and /metrics
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.wire import DEFAULT_PREFIX, generate_key, key_id, load_private_key, save_keypair
from controller.broker import AmqttBroker, BrokerError, start_embedded_broker
from controller.certs import write_pki
from controller.db import connect, database_errors, is_url, redact
from controller.http_api import Backend, DashboardServer, HttpSettings
from controller.metrics import ProcessView
from controller.policy import PolicyConfig
from controller.oneshot import fleet_rules
from controller.service import BrokerSettings, ControllerConfig, ControllerService, FleetRules
from controller.store import Store
from controller.tokens import ROLES, Tokens

log = logging.getLogger("controller")

DEFAULT_DB = "iotguard-controller.sqlite"
DEFAULT_KEY = "signing.key"
CONTROLLER_TABLES = {"devices", "alerts", "rulesets"}  # what tells the controller's database from another
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer killed by a closed pipe


class UsageError(Exception):
    """What the user asked for cannot be done; the message says why (one line, exit status 2)."""


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _names(text: str) -> list[str]:
    return [n for n in (part.strip() for part in text.split(",")) if n]


def _add_broker_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("broker")
    g.add_argument("--broker", type=_host_port, required=required, help="HOST:PORT of the MQTT broker")
    g.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    g.add_argument("--tls-ca", type=Path, help="CA certificate (turns TLS on)")
    g.add_argument("--tls-cert", type=Path, help="this controller's client certificate")
    g.add_argument("--tls-key", type=Path)
    g.add_argument("--username")
    g.add_argument("--password")


def _broker_settings(args: argparse.Namespace) -> BrokerSettings:
    host, port = args.broker
    return BrokerSettings(host, port, args.protocol, args.tls_ca, args.tls_cert, args.tls_key, args.username, args.password)


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        print("(none)")
        return
    text = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun if n == 1 else noun + 's'}"


def _when(ts: float | None, as_json: bool = False) -> str | None:
    """Local time: ISO 8601 with the UTC offset in tables; the JSON output keeps its established format."""
    if ts is None:
        return None
    if as_json:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _check_database(path: Path) -> None:
    """An existing file given as --db must be the controller's database: neither read as one nor written to
    (the schema added to it) when it is some other file."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: not an SQLite database ({exc})") from None
    if tables and not CONTROLLER_TABLES <= tables:
        raise UsageError(f"{path}: an SQLite database, but not the controller's (no {', '.join(sorted(CONTROLLER_TABLES - tables))} table)")


def _check_postgres(url: str, view: bool) -> None:
    """A PostgreSQL database given as --db must be reachable, and hold the controller's tables (a view) or
    nothing but them (anything else: the schema is created there)."""
    try:
        db = connect(url)
    except ImportError:
        raise UsageError('PostgreSQL needs psycopg: pip install "psycopg[binary]"') from None
    except database_errors() as exc:
        raise UsageError(f"cannot open {redact(url)}: {str(exc).strip().splitlines()[0]}") from None
    try:
        tables = db.tables()
    finally:
        db.close()
    if tables and not CONTROLLER_TABLES <= tables:
        raise UsageError(f"{redact(url)}: a database, but not the controller's (no {', '.join(sorted(CONTROLLER_TABLES - tables))} table)")
    if not tables and view:
        raise UsageError(f"{redact(url)} holds no controller tables yet (run 'migrate' or 'run' there first)")


def _database(args: argparse.Namespace, view: bool = False) -> str | Path:
    """--db, checked; a read-only ``view`` needs an existing database (it must not create one: a wrong folder
    or a forgotten --db would show an empty fleet and leave a stray database behind)."""
    if is_url(args.db):
        _check_postgres(args.db, view)
        return args.db
    path = Path(args.db)
    if path.exists():
        _check_database(path)
    elif view:
        how = "give --db FILE" if str(path) == DEFAULT_DB else "check the path"
        raise UsageError(f"no controller database at {path} ({how}: the file that 'run' keeps its fleet in)")
    return path


# --- commands ----------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    private, public = args.out / "signing.key", args.out / "signing.pub"
    if private.exists() and not args.force:
        print(f"{private} exists; use --force to replace it (agents trusting the old key will refuse new rules)")
        return 1
    key = generate_key()
    save_keypair(key, private, public)
    print(f"wrote {private} (keep secret) and {public} (install on every agent); key id {key_id(key.public_key())}")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    host, port = args.listen
    issued = write_pki(
        args.out, _names(args.devices), _names(args.controllers), fleet=args.fleet, prefix=args.prefix,
        listen_host=host, port=port, hosts=tuple(_names(args.hosts)),
        discovery_prefix=args.discovery_prefix if args.home_assistant else None,
    )
    print(f"wrote CA, broker, {_counted(len(issued) - 2, 'client certificate')}, mosquitto.conf and acl to {args.out}")
    print(f"start the broker with: mosquitto -c {args.out / 'mosquitto.conf'}  (keep {issued['ca'].key} offline)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    db = _database(args)
    before = _schema_version(db)
    store = Store(db)
    try:
        version = store.schema_version()
    finally:
        store.close()
    change = f"migrated from version {before}" if before != version else "already current"
    print(f"{redact(db)}: schema version {version} ({change})")
    return 0


def _schema_version(db: str | Path) -> int:
    """The version a database is at before any migration (0: none recorded, or nothing there yet)."""
    if not is_url(db) and not Path(db).exists():
        return 0
    conn = connect(db)
    try:
        return conn.schema_version()
    finally:
        conn.close()


def cmd_run(args: argparse.Namespace) -> int:
    db = _database(args)
    broker = None
    if args.broker is None:
        try:  # beside an SQLite file; in the working folder for a PostgreSQL database
            broker = start_embedded_broker((Path.cwd() if is_url(db) else Path(db).resolve().parent) / "broker")
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        args.broker = (broker.host, broker.port)
        print(f"no --broker given: started an embedded broker on {broker.host}:{broker.port}", flush=True)
        if isinstance(broker, AmqttBroker):  # MQTT 3.1.1 only: no shared subscriptions
            args.protocol, args.share_group = "3.1.1", ""
    config = ControllerConfig(
        db=db, signing_key=args.key, broker=_broker_settings(args), name=args.name, prefix=args.prefix,
        share_group=args.share_group,
        policy=PolicyConfig(k_devices=args.k, window_s=args.window, block_ttl_s=args.ttl or None,
                            min_confidence=args.min_confidence, never_block=tuple(_names(args.never_block))),
    )
    service = ControllerService(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        web = _dashboard(args, service) if args.http else None  # bound before the service starts: a taken port stops here
    except UsageError:
        if broker is not None:
            broker.stop()
        raise
    service.start()
    if web is not None:
        web.start()
        print(f"dashboard on {web.url}/ (log in with a token: {_program_name()} token create --db {redact(db)})", flush=True)
    if not service.ready.wait(10):
        print(f"broker {args.broker[0]}:{args.broker[1]} not reachable yet; retrying in the background", flush=True)
    print(f"controller replica {args.name!r} running (database {redact(db)}); Ctrl-C to stop", flush=True)
    stop.wait()
    if web is not None:
        web.stop()
    service.stop()
    if broker is not None:
        broker.stop()
    print(f"stopped: {service.stats}")
    return 0


def _dashboard(args: argparse.Namespace, service: ControllerService) -> DashboardServer:
    host, port = args.http
    if (args.http_cert is None) != (args.http_key is None):
        raise UsageError("--http-cert and --http-key go together")
    stats = service.stats
    process = ProcessView(rejected=lambda: dict(stats.rejected), duplicates=lambda: stats.alerts_duplicate,
                          connected=service.ready.is_set)  # fmt: skip
    backend = Backend(service.config.db, args.key, _broker_settings(args), args.prefix, process)
    try:
        return DashboardServer(HttpSettings(host, port, args.http_cert, args.http_key, args.http_refresh), backend)
    except OSError as exc:
        raise UsageError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from None


def cmd_token(args: argparse.Namespace) -> int:
    tokens = Tokens(Store(_database(args, view=args.action != "create")))
    if args.action == "create":
        token, secret = tokens.create(args.role, args.name)
        print(secret)
        print(f"token {token.id} ({token.role}, {token.name!r}) created; the line above is shown only this once",
              file=sys.stderr)  # fmt: skip
        return 0
    if args.action == "revoke":
        if not tokens.revoke(args.id):
            print(f"no active token {args.id}")
            return 1
        print(f"token {args.id} revoked")
        return 0
    rows = [vars(t) | {"created": _when(t.created_at, args.json), "last_used": _when(t.last_used, args.json),
                       "revoked": _when(t.revoked_at, args.json)} for t in tokens.list()]  # fmt: skip
    _print_rows(rows, ["id", "name", "role", "created", "last_used", "revoked"], args.json)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    rows = Store(_database(args, view=True)).devices(args.fleet)
    for r in rows:
        status = r.pop("status") or {}
        r["last_seen"] = _when(r["last_seen"], args.json)
        for k in ("packets_per_s", "drops", "model_version", "ruleset_version", "alerts_queued", "alerts_dropped"):
            r[k] = status.get(k)
    _print_rows(rows, ["fleet", "device", "state", "last_seen", "packets_per_s", "drops", "model_version",
                       "ruleset_version", "alerts_queued", "alerts_dropped"], args.json)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    rows = Store(_database(args, view=True)).recent_alerts(args.limit, args.fleet)
    for r in rows:
        r["received"] = _when(r["received_at"], args.json)
    _print_rows(rows, ["received", "fleet", "device", "seq", "class", "confidence", "source_ip", "victim_ip",
                       "packets", "action"], args.json)
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    store = Store(_database(args, view=True))
    rows = store.rulesets(args.fleet, args.limit)
    for r in rows:
        r["issued"] = _when(r["issued_at"], args.json)
    _print_rows(rows, ["fleet", "target", "version", "issued", "rules", "applied", "rejected"], args.json)
    if args.blocks and args.fleet:
        blocks = [vars(b) | {"expires": _when(b.expires, args.json)} for b in store.blocks(args.fleet, time.time())]
        print()
        _print_rows(blocks, ["source", "origin", "reason", "expires"], args.json)
    return 0


@contextmanager
def _fleet_rules(args: argparse.Namespace) -> Iterator[FleetRules]:
    """Database and key first, then the broker, all before anything changes.  Each message is published
    inside the database transaction that records it and waits for the broker's acknowledgement, so a rule
    set or block the broker did not take is rolled back: nothing is recorded as issued unless published."""
    db, key = _database(args), load_private_key(args.key)
    with fleet_rules(lambda: Store(db), key, args.prefix, _broker_settings(args), f"iotguard-cli-{time.time_ns()}") as rules:
        yield rules


def cmd_block(args: argparse.Namespace) -> int:
    with _fleet_rules(args) as rules:
        ruleset = rules.block(args.fleet, args.source, args.reason, args.ttl)
    print(f"blocked {args.source} in fleet {args.fleet}: rule set v{ruleset.version} ({_counted(len(ruleset.rules), 'rule')}) published")
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    with _fleet_rules(args) as rules:
        ruleset = rules.unblock(args.fleet, args.source)
    if ruleset is None:
        print(f"{args.source} is not blocked in fleet {args.fleet}")
        return 1
    print(f"unblocked {args.source} in fleet {args.fleet}: rule set v{ruleset.version} ({_counted(len(ruleset.rules), 'rule')}) published")
    return 0


def cmd_push_model(args: argparse.Namespace) -> int:
    meta, tflite = json.loads(args.meta.read_text()), args.tflite.read_bytes()  # read before connecting
    with _fleet_rules(args) as rules:
        devices = _names(args.devices) if args.devices else [d["device"] for d in rules.store.devices(args.fleet)]
        if not devices:
            print(f"no devices known in fleet {args.fleet}; name them with --devices")
            return 1
        version = rules.push_model(args.fleet, devices, meta, tflite, args.version)
    print(f"model v{version} sent to {_counted(len(devices), 'device')} of fleet {args.fleet}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_program_name(), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # As the agent's and the converter's (agent.console.add_logging_flags; the controller imports only agent.wire).
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info", type=str.lower,
                        help="what is logged (default: info)")
    parser.add_argument("-v", "--verbose", action="store_const", dest="log_level", const="debug",
                        help="the same as --log-level debug")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="make the signing key pair")
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("certs", help="make CA, certificates, mosquitto.conf and ACL")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--devices", required=True, help="comma-separated device names (certificate CNs)")
    p.add_argument("--controllers", default="controller", help="comma-separated controller names")
    p.add_argument("--fleet", default="default")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--listen", type=_host_port, default=("0.0.0.0", 8883), help="broker listener HOST:PORT")
    p.add_argument("--hosts", default="localhost,127.0.0.1", help="names/addresses in the broker certificate")
    p.add_argument("--home-assistant", action="store_true",
                   help="let devices publish Home Assistant discovery configs; a client certificate for Home Assistant")
    p.add_argument("--discovery-prefix", default="homeassistant", help="Home Assistant's discovery prefix")
    p.set_defaults(func=cmd_certs)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=DEFAULT_DB, metavar="FILE|URL",
                       help="SQLite file (default %(default)s) or postgresql://USER@HOST:PORT/NAME")
        p.add_argument("--prefix", default=DEFAULT_PREFIX)

    p = sub.add_parser("run", help="run a controller replica")
    common(p)
    _add_broker_args(p, required=False)
    p.add_argument("--key", type=Path, default=Path(DEFAULT_KEY), help="Ed25519 signing key (from keygen)")
    p.add_argument("--name", default="controller", help="replica name (unique per replica)")
    p.add_argument("--share-group", default="controllers", help='MQTT 5 shared subscription group ("": none)')
    p.add_argument("--k", type=int, default=3, help="devices that must report a source before it is blocked")
    p.add_argument("--window", type=float, default=300.0, help="seconds in which those reports count")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds a policy block lasts (0: until unblocked)")
    p.add_argument("--min-confidence", type=float, default=0.5)
    p.add_argument("--never-block", default="", help="comma-separated CIDRs never blocked by policy")
    g = p.add_argument_group("dashboard")
    g.add_argument("--http", type=_host_port, help="serve the dashboard, JSON API and /metrics on HOST:PORT")
    g.add_argument("--http-cert", type=Path, help="certificate for HTTPS (with --http-key)")
    g.add_argument("--http-key", type=Path)
    g.add_argument("--http-refresh", type=int, default=10, help="seconds between the page's refreshes (0: never)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("migrate", help="apply the schema migrations and print the schema version")
    common(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("token", help="access tokens of the dashboard, API and /metrics")
    actions = p.add_subparsers(dest="action", required=True)
    t = actions.add_parser("create", help="print a new token (once; only its hash is stored)")
    t.add_argument("--role", choices=ROLES, default="viewer", help="viewer reads; admin also unblocks")
    t.add_argument("--name", default="", help="who or what uses it (default: the role)")
    t = actions.add_parser("list", help="tokens (never their secrets)")
    t.add_argument("--json", action="store_true")
    t = actions.add_parser("revoke", help="revoke a token by its id (ends its sessions too)")
    t.add_argument("id")
    for t in actions.choices.values():
        common(t)
    p.set_defaults(func=cmd_token)

    for name, func, helptext in (("devices", cmd_devices, "list devices"), ("alerts", cmd_alerts, "recent alerts"),
                                 ("rules", cmd_rules, "rule set versions")):
        p = sub.add_parser(name, help=helptext)
        common(p)
        p.add_argument("--fleet")
        p.add_argument("--limit", type=int, default=20)
        p.add_argument("--json", action="store_true")
        if name == "rules":
            p.add_argument("--blocks", action="store_true", help="also list the active blocks of --fleet")
        p.set_defaults(func=func)

    for name, func in (("block", cmd_block), ("unblock", cmd_unblock)):
        p = sub.add_parser(name, help=f"{name} a source fleet-wide")
        common(p)
        _add_broker_args(p, required=True)
        p.add_argument("source", help="address or CIDR")
        p.add_argument("--fleet", required=True)
        p.add_argument("--key", type=Path, default=Path(DEFAULT_KEY))
        if name == "block":
            p.add_argument("--reason", default="manual block")
            p.add_argument("--ttl", type=float, default=None, help="seconds until the block expires (default: never)")
        p.set_defaults(func=func)

    p = sub.add_parser("push-model", help="send a signed model bundle")
    common(p)
    _add_broker_args(p, required=True)
    p.add_argument("--fleet", required=True)
    p.add_argument("--devices", help="comma-separated; default: every known device of the fleet")
    p.add_argument("--tflite", type=Path, required=True)
    p.add_argument("--meta", type=Path, required=True, help="the bundle's metadata JSON")
    p.add_argument("--version", type=int, help="default: one more than the last pushed")
    p.add_argument("--key", type=Path, default=Path(DEFAULT_KEY))
    p.set_defaults(func=cmd_push_model)
    return parser


def _program_name() -> str:
    """``iotguard-controller`` when run as the console script, else ``python -m controller``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("iotguard-") else "python -m controller"


def _broken_pipe() -> int:
    """Standard output closed early (``... | head``): one line, and no second failure when Python flushes it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    print("error: output closed before the end (broken pipe)", file=sys.stderr)
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S%z")  # ISO 8601, as every time the commands print
    try:
        return args.func(args)
    except BrokenPipeError:
        return _broken_pipe()
    except database_errors() as exc:  # e.g. a database damaged after the check at start
        print(f"error: database {redact(getattr(args, 'db', ''))}: {str(exc).strip()}", file=sys.stderr)
        return 2
    except (UsageError, OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
