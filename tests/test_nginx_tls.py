"""``deploy/nginx.conf`` in front of two real gateways: ``wss://`` for both SDKs, and a reload.

Debian's nginx (``make nginx``, a prerequisite of ``make test``) runs the committed site
file ``deploy/nginx.conf`` and its main-context part ``deploy/nginx-main.conf`` as a
non-daemon, on free loopback ports, with its pid, logs and temp files in the test's
folder. Only the site's ``listen``, ``ssl_certificate*`` and upstream ``server`` lines are
swapped for the test's (``render_site``); the main part is included as it is. The
certificate is made here for ``127.0.0.1`` and ``localhost``, signed by a test CA that the
Python SDK trusts through ``SSL_CERT_FILE`` and Node through ``NODE_EXTRA_CA_CERTS``.

The reload: a ``ticker`` run waits for its ``go`` while the Python SDK (which started it)
and the TypeScript SDK in Node (attached) watch it through nginx. nginx gets SIGHUP; its
old worker keeps their sockets until ``worker_shutdown_timeout`` and then closes them.
Each SDK's transport holds its reconnect at a gate while a plain client connected to a
gateway directly answers ``go`` and watches the run to its end, so both SDKs miss every
tick. Then the gates open: the SDKs reconnect through nginx's new worker, resume with
``since_seq``, and each must have every event of the run once, in order, as logged.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster import fresh_cluster, wait_for
from graphwire_client import GraphwireClient, Socket, WebSocketTransport
from harness import ROOT, Server, assert_gap_free, connect, free_port
from redis_proc import RedisServer

SITE = ROOT / "deploy" / "nginx.conf"
MAIN_PART = ROOT / "deploy" / "nginx-main.conf"
DIST = ROOT / "clients" / "js" / "dist" / "index.js"
STARTUP_TIMEOUT = 15.0
# Every wait below but the drop itself.
DEADLINE = 30.0
TICKS = 40


def shutdown_timeout() -> float:
    """``worker_shutdown_timeout`` of ``deploy/nginx-main.conf``, in seconds."""
    match = re.search(r"^worker_shutdown_timeout (\d+)s;$", MAIN_PART.read_text(), re.M)
    assert match, "deploy/nginx-main.conf sets worker_shutdown_timeout in seconds"
    return float(match.group(1))


# --- the certificate ------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    """The test CA's certificate (PEM): what the clients trust."""
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A test CA and a server certificate it signed for ``localhost`` and ``127.0.0.1`` (SAN)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graphwire test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    made = Certificates(folder / "ca.pem", folder / "gateway.pem", folder / "gateway.key")
    made.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    made.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    made.key.chmod(0o600)
    return made


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- nginx ----------------------------------------------------------------------------


def _swap(text: str, pattern: str, replacement: str) -> str:
    swapped, count = re.subn(pattern, replacement, text, flags=re.M)
    assert count == 1, f"deploy/nginx.conf: one line should match {pattern!r}, {count} do"
    return swapped


def render_site(text: str, upstreams: list[int], tls_port: int, http_port: int, certs: Certificates) -> str:
    """``deploy/nginx.conf`` with the test's listen ports, certificate and gateways; nothing else changes."""
    text = _swap(text, r"^(\s+)listen 443 ssl;$", rf"\g<1>listen 127.0.0.1:{tls_port} ssl;")
    text = _swap(text, r"^(\s+)listen 80;$", rf"\g<1>listen 127.0.0.1:{http_port};")
    text = _swap(text, r"^(\s+)ssl_certificate(\s+)\S+;$", rf"\g<1>ssl_certificate\g<2>{certs.cert};")
    text = _swap(text, r"^(\s+)ssl_certificate_key(\s+)\S+;$", rf"\g<1>ssl_certificate_key\g<2>{certs.key};")
    servers = list(re.finditer(r"^(\s+)server \S+:\d+;\n", text, re.M))
    assert len(servers) >= 2, "deploy/nginx.conf's upstream lists several gateways"
    ours = "".join(f"{servers[0].group(1)}server 127.0.0.1:{port};\n" for port in upstreams)
    for server in reversed(servers):
        text = text[: server.start()] + (ours if server is servers[0] else "") + text[server.end() :]
    return text


# The test's main context: no daemon, every file in the test's folder. Workers of a root
# master would run as `nobody`, who cannot enter pytest's private tmp folder for the temp
# files: as root they stay root.
MAIN = """\
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;
{user}
include {main_part};
events {{
    worker_connections 1024;
}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/graphwire.conf;
}}
"""


def nginx_binary() -> str:
    found = "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else shutil.which("nginx")
    if found is None:
        pytest.fail("nginx is not installed: `make nginx` (part of `make test`) installs Debian's")
    return found


def _children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _is_nginx_worker(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: worker")
    except OSError:
        return False


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    folder: Path
    tls_port: int
    http_port: int

    def wss(self, path: str) -> str:
        return f"wss://127.0.0.1:{self.tls_port}{path}"

    def https(self, path: str) -> str:
        return f"https://127.0.0.1:{self.tls_port}{path}"

    def log(self) -> str:
        parts = [self.folder / "nginx.out", self.folder / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def workers(self) -> set[int]:
        return _children(self.process.pid)

    def reload(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM); the master and any worker left are killed if it lingers."""
        workers = self.workers()
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in workers:  # a worker outlives a killed master: end it too
            if _is_nginx_worker(pid):
                os.kill(pid, signal.SIGKILL)


def https_get(url: str, ca: Path) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return response.status, response.read()


@contextmanager
def running_nginx(folder: Path, upstreams: list[int], certs: Certificates) -> Iterator[Nginx]:
    """nginx with the rendered ``deploy/nginx.conf``, once it proxies ``/ws/health`` over TLS."""
    binary = nginx_binary()
    tls_port, http_port = free_port(), free_port()
    site = render_site(SITE.read_text(), upstreams, tls_port, http_port, certs)
    (folder / "graphwire.conf").write_text(site)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(MAIN.format(folder=folder, user=user, main_part=MAIN_PART))
    command = [binary, "-p", f"{folder}/", "-c", str(conf), "-e", str(folder / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, f"nginx -t refuses the rendered deploy/nginx.conf:\n{checked.stderr}\n{site}"
    with (folder / "nginx.out").open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(process, folder, tls_port, http_port)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited early:\n{nginx.log()}")
            try:
                https_get(nginx.https("/ws/health"), certs.ca)  # raises unless 2xx
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nginx did not proxy /ws/health within {STARTUP_TIMEOUT} s:\n{nginx.log()}"
                    ) from exc
                time.sleep(0.05)
        yield nginx
    finally:
        nginx.stop()


@dataclass
class Edge:
    certs: Certificates
    gateways: list[Server]
    nginx: Nginx


@pytest.fixture(scope="module")
def edge(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """Two gateways on the session's Redis behind nginx with ``deploy/nginx.conf`` and a test certificate."""
    folder = tmp_path_factory.mktemp("nginx-tls")
    certs = make_certificates(folder)
    with (
        fresh_cluster(redis_server, folder, 2, {}) as gateways,
        running_nginx(folder, [g.port for g in gateways], certs) as nginx,
    ):
        yield Edge(certs, gateways, nginx)
        # An unprivileged (or capability-less) master cannot raise worker_rlimit_nofile past
        # its hard limit; nginx says so and goes on. Any other alert is a failure.
        problems = [line for line in nginx.log().splitlines() if re.search(r"\[(emerg|alert|crit)\]", line)]
        assert [p for p in problems if "setrlimit(RLIMIT_NOFILE" not in p] == [], nginx.log()


def test_http_through_nginx_and_the_redirect_to_https(edge: Edge) -> None:
    ca = edge.certs.ca
    # Under location /ws/ without an Upgrade header, and under location /.
    assert json.loads(https_get(edge.nginx.https("/ws/health"), ca)[1])["status"] == "ok"
    assert "active_connections" in json.loads(https_get(edge.nginx.https("/ws/metrics"), ca)[1])
    assert b"\nasyncapi: 3.0.0\n" in https_get(edge.nginx.https("/asyncapi.yaml"), ca)[1]
    assert b"<html" in https_get(edge.nginx.https("/"), ca)[1].lower()
    # Readiness and the Prometheus text of whichever gateway took the request.
    assert json.loads(https_get(edge.nginx.https("/ready"), ca)[1])["status"] == "ready"
    assert b"# TYPE graphwire_connections gauge" in https_get(edge.nginx.https("/metrics"), ca)[1]
    plain = http.client.HTTPConnection("127.0.0.1", edge.nginx.http_port, timeout=5)
    try:
        plain.request("GET", "/ws/health")
        response = plain.getresponse()
        assert (response.status, response.getheader("Location")) == (301, "https://127.0.0.1/ws/health")
    finally:
        plain.close()


# --- the SDKs -------------------------------------------------------------------------


class GatedTransport:
    """The SDK's own transport, noting what it sends; a reconnect waits for ``gate``."""

    def __init__(self) -> None:
        self.inner = WebSocketTransport()
        self.attempts = 0
        self.reconnecting = asyncio.Event()
        self.gate = asyncio.Event()
        self.sent: list[tuple[int, dict[str, Any]]] = []
        """(attempt, frame) for every frame sent."""

    async def connect(self, url: str, *, headers: Mapping[str, str], open_timeout: float) -> Socket:
        self.attempts += 1
        attempt = self.attempts
        if attempt > 1:
            self.reconnecting.set()
            await self.gate.wait()
        return _Noted(await self.inner.connect(url, headers=headers, open_timeout=open_timeout), attempt, self.sent)


@dataclass
class _Noted:
    socket: Socket
    attempt: int
    sent: list[tuple[int, dict[str, Any]]]

    async def send(self, text: str) -> None:
        self.sent.append((self.attempt, json.loads(text)))
        await self.socket.send(text)

    async def recv(self) -> str:
        return await self.socket.recv()

    async def close(self) -> None:
        await self.socket.close()


# The TypeScript SDK in Node, attached to a run: one JSON line per event, per reconnect
# attempt and per subscribe it sends; its reconnects wait for an `open` line on stdin.
NODE_WATCHER = """\
import { createInterface } from "node:readline";
import { GraphwireClient, webSocketTransport } from "@DIST@";

const [url, workflowId] = process.argv.slice(2);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\\n");
let open;
const gate = new Promise((resolve) => (open = resolve));
createInterface({ input: process.stdin }).on("line", (line) => line === "open" && open());
const inner = webSocketTransport();
let attempts = 0;
async function transport(target, events, options) {
  const attempt = ++attempts;
  if (attempt > 1) {
    say({ reconnecting: attempt });
    await gate;
  }
  const socket = await inner(target, events, options);
  return {
    send(text) {
      const frame = JSON.parse(text);
      if (frame.type === "subscribe") say({ sent: frame, attempt });
      socket.send(text);
    },
    close: (code, reason) => socket.close(code, reason),
  };
}
const client = new GraphwireClient(url, { transport, connectTimeoutMs: 120000 });
await client.connect();
const run = await client.attach(workflowId, { sinceSeq: 0 });
for await (const event of run) say({ event });
say({ result: await run.result() });
await client.close();
process.exit(0);
"""


@dataclass
class NodeWatcher:
    process: asyncio.subprocess.Process
    stderr: Path
    lines: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, folder: Path, url: str, workflow_id: str, ca: Path) -> NodeWatcher:
        node = shutil.which("node")
        if node is None or not DIST.exists():
            pytest.fail("Node or the built TypeScript SDK is missing: run `make setup` (Node.js 20, npm)")
        script = folder / "watch.mjs"
        script.write_text(NODE_WATCHER.replace("@DIST@", DIST.as_uri()))
        stderr = folder / "node.err"
        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                node,
                str(script),
                url,
                workflow_id,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env={**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)},
            )
        return cls(process, stderr)

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = DEADLINE) -> dict[str, Any]:
        """The first line so far or to come that ``predicate`` accepts."""
        for seen in self.lines:
            if predicate(seen):
                return seen
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    await self.process.wait()
                    raise AssertionError(f"node ended ({self.process.returncode}):\n{self.stderr.read_text()}")
                line: dict[str, Any] = json.loads(raw)
                self.lines.append(line)
                if predicate(line):
                    return line

    async def tell(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{text}\n".encode())
        await self.process.stdin.drain()

    async def end(self) -> int:
        """Its exit code, once it exits by itself (after the run's result)."""
        async with asyncio.timeout(DEADLINE):
            return await self.process.wait()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def event_type(line: dict[str, Any]) -> str | None:
    event = line.get("event")
    return event["type"] if isinstance(event, dict) else None


async def test_both_sdks_resume_through_nginx_after_a_reload(
    edge: Edge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(edge.certs.ca))  # what the Python SDK's TLS context trusts
    url = edge.nginx.wss("/ws/workflow")
    gated = GatedTransport()
    client = GraphwireClient(url, transport=gated)
    node: NodeWatcher | None = None
    direct = None
    try:
        await client.connect()
        run = await client.start_workflow("ticker", {"count": TICKS, "payload_bytes": 8, "wait_for_go": True})
        wid = run.workflow_id
        node = await NodeWatcher.start(tmp_path, url, wid, edge.certs.ca)
        await node.until(lambda line: event_type(line) == "input_request")
        await wait_for(lambda: any(e.type == "input_request" for e in run.events), "the Python SDK's input_request")
        asked = run.last_seq

        old_workers = edge.nginx.workers()
        assert old_workers, edge.nginx.log()
        edge.nginx.reload()
        # The old worker holds both sockets until worker_shutdown_timeout, then closes them.
        drop = shutdown_timeout() + DEADLINE
        await asyncio.wait_for(gated.reconnecting.wait(), drop)
        await node.until(lambda line: "reconnecting" in line, drop)
        await wait_for(lambda: not old_workers & edge.nginx.workers(), "the old nginx worker exited")
        assert edge.nginx.workers(), "nginx runs a new worker"

        # While both SDKs are away: `go`, from a client of a gateway, and the whole run.
        direct = await connect(edge.gateways[0].ws())
        await direct.send({"type": "subscribe", "id": "watch", "workflow_id": wid, "since_seq": 0})
        seen = await direct.until(lambda m: m["type"] == "input_request" and m.get("workflow_id") == wid)
        await direct.answer(seen[-1], "go")
        logged = [m for m in seen if m.get("workflow_id") == wid and "seq" in m] + await direct.run_events(wid)
        assert_gap_free(logged)
        assert logged[-1]["type"] == "workflow_completed"
        assert sum(e["type"] == "node_event" for e in logged) == TICKS

        gated.gate.set()
        await node.tell("open")
        result = await asyncio.wait_for(run.result(), DEADLINE)
        assert result.count == TICKS
        await node.until(lambda line: "result" in line)
        assert await node.end() == 0, node.stderr.read_text()

        wanted = [(e["type"], e["seq"]) for e in logged]
        assert [(e.type, e.seq) for e in run.events] == wanted
        assert [(line["event"]["type"], line["event"]["seq"]) for line in node.lines if "event" in line] == wanted
        # Each resumed with since_seq: the input_request was the last event it had.
        resumed = [f for attempt, f in gated.sent if attempt > 1 and f["type"] == "subscribe"]
        assert [(f["workflow_id"], f["since_seq"]) for f in resumed] == [(wid, asked)], gated.sent
        node_resumed = [line["sent"] for line in node.lines if "sent" in line and line["attempt"] > 1]
        assert [(f["workflow_id"], f["since_seq"]) for f in node_resumed] == [(wid, asked)], node.lines
    finally:
        if direct is not None:
            await direct.close()
        if node is not None:
            await node.kill()
        await client.close()
