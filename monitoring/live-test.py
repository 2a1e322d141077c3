#!/usr/bin/env python3
"""The dashboards and alerts against a real Prometheus, on loopback, bounded in time.

    .tools/venv/bin/python monitoring/live-test.py [--operator target/debug/meteor-operator]
        [--seconds 40] [--data OUT.json] [--png OUT.png] [--keep]

Starts, each on a free loopback port:
  * Python backends (200s, some 404 and 500, a slow path, WebSocket echo);
  * three proxies (`meteor-operator proxy`): app todos (plain HTTP, two backends), app chat
    (TLS with proxy/tests/peers/tls, a rate limit), app broken (its only backend is a closed
    port: every request gets 503, no backend);
  * a fake API server (monitoring/fake_apiserver.py) and `meteor-operator run` against it, which
    wins its Lease and reconciles four MeteorApps (Ready; autoscaled and rolling out; a missing
    Secret; a reconcile error on every pass);
  * Prometheus (Debian's package, `prometheus` on PATH) scraping all of them every second with
    the chart's default rules loaded (monitoring/rules/meteor-operator.rules.yaml), labelled as
    the chart's ServiceMonitor and PodMonitor label them (job meteor-operator-metrics; the
    proxies' namespace and app);
and drives traffic through the proxies (requests, WebSockets, TLS handshakes good and bad,
429s, 503s). Then, through Prometheus' HTTP API, it evaluates every panel expression and
variable query of monitoring/dashboards/*.json (with the variables bound to each test app) and
every rule expression, and fails on:
  * a metric name that neither has series in Prometheus nor is declared (# TYPE) in a scrape of
    the operator or a proxy: a misspelled or missing series;
  * a label name in a selector that no series of that metric carries (a misspelled label);
  * a dashboard panel whose query returns nothing for every binding while each of its selectors
    matched series (a join or aggregation that cannot produce data);
  * a rule whose evaluation Prometheus reports as failing (`health` other than ok).
Expressions that return nothing only because their series exist under conditions this run does
not create (managed MongoDB, a rollback, a stuck rollout, an upgrade-slot wait) are accepted when
each such metric is declared in a scrape, and listed as "declared, no series here".

--data writes the "Meteor / App" dashboard's panels for app todos over the run (query_range) as
JSON; --png renders that with monitoring/render-dashboard.py (python3-matplotlib, run with
/usr/bin/python3). Exit status: 0 passed, 1 failed, 2 could not run (a tool missing).

Against a running cluster (the e2e scenario `monitoring`, e2e/run.sh), nothing is started but
Prometheus:

    live-test.py --against-cluster --operator-metrics http://127.0.0.1:18080/metrics \\
        --proxy-targets NS/APP/POD=10.244.0.7:9090[+https://10.244.0.7:8443],... [--apps NS/APP,...]
        [--proxy-http-port 8080] [--seconds 40] [--keep]

Prometheus scrapes the operator's metrics (job meteor-operator-metrics, as the chart's
ServiceMonitor names it) and each proxy pod's admin port /metrics (job
meteor-system/meteor-operator-proxies, labels namespace, app, pod, container and endpoint, as the
chart's PodMonitor gives them; honor_labels as both do), every second. Traffic goes through each
proxy pod's client port (+URL, default http://ADMIN_HOST:--proxy-http-port; https:// for a proxy
terminating TLS): GETs with a 404, a burst of 40 every 5 s (a rate-limited app answers some with
429), WebSockets, SockJS xhr-polling sessions when the app serves SockJS at /sockjs (as
e2e/routing/backend.js does), plain HTTP sent to an HTTPS port (a failed handshake). After
--seconds the same checks run, the dashboards' variables bound to --apps (default: the apps of
--proxy-targets), and the closing line is `live-test --against-cluster: passed` (or FAILED). A
proxy through which no request got a 200 is a failure too (its series would say nothing). The
shared part (Prometheus, the checks, the report) is monitoring/promcheck.py.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import fake_apiserver  # noqa: E402
from promcheck import (DASHBOARDS, NO_SERIES, OPERATOR_JOB, Checker, Procs, check_all,  # noqa: E402
                       check_dashboards, counts, declared_families, free_port, http_get, legend, log,
                       report, start_prometheus, substitute)

NAMESPACE = "shop"
TLS = os.path.join(ROOT, "proxy", "tests", "peers", "tls")
# Each dashboard's variable bindings: a panel must return data for at least one of them.
BINDINGS = {
    "fleet": [{"job": OPERATOR_JOB}],
    "app": [{"namespace": NAMESPACE, "app": "todos"}, {"namespace": NAMESPACE, "app": "chat"}],
    "proxy": [{"namespace": NAMESPACE, "app": a} for a in ("todos", "chat", "broken")],
}
# --against-cluster: the job names the chart's ServiceMonitor and PodMonitor give (the Prometheus
# Operator names a PodMonitor's job NAMESPACE/NAME; meteor-operator-proxies in meteor-system).
PROXY_JOB = "meteor-system/meteor-operator-proxies"


# --- backends ------------------------------------------------------------------------------------

class Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body=b"ok"):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path == "/slow":
            time.sleep(0.15)
        code = {"/missing": 404, "/fail": 500}.get(self.path, 200)
        self.send(code, b"x" * (2048 if self.path == "/big" else 2))

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        conn = self.connection
        conn.settimeout(120)
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            return


def start_backend():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


# --- processes ------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def wait_for_line(log_path, pattern, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = ANSI.sub("", open(log_path, errors="replace").read())
        found = re.search(pattern, text)
        if found:
            return found
        if proc.poll() is not None:
            raise SystemExit(f"FAILED: {log_path}: exited before '{pattern}':\n{text[-2000:]}")
        time.sleep(0.1)
    raise SystemExit(f"FAILED: {log_path}: no '{pattern}' within {seconds}s")


def start_proxy(procs, operator, name, backends, extra=()):
    argv = [operator, "proxy", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--backend", ",".join(backends), "--health-path", "/peer/health", "--health-interval", "500",
            "--threads", "1", *extra]
    proc, log_path = procs.start(f"proxy-{name}", argv, {"RUST_LOG": "info"})
    found = wait_for_line(log_path, r"proxy serving.*?listen=(\S+).*?admin=(\S+)", proc)
    return found.group(1), found.group(2)


# --- traffic --------------------------------------------------------------------------------------

def arm_timeout(seconds):
    """Ends the run with a TimeoutError once it has taken `seconds`."""
    def expire(*_):
        raise TimeoutError(f"the live test ran past --timeout {seconds}s")
    signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)


class Clients:
    """Client threads until stop(): counts of what they saw, sockets held open meanwhile."""

    def __init__(self):
        self.stopping = threading.Event()
        self.threads = []
        self.counts = {}
        self.held = []
        self.lock = threading.Lock()

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def run(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)
        for held in self.held:
            held.close()
        self.held = []


class Traffic(Clients):
    """Clients of the three proxies until stop() (rates kept small: two shared cores)."""

    def __init__(self, todos, chat, broken):
        super().__init__()
        self.todos, self.chat, self.broken = todos, chat, broken

    def start(self):
        self.run(self.requests, self.todos, False, 0.03)
        self.run(self.requests, self.todos, False, 0.05)
        self.run(self.requests, self.chat, True, 0.02)
        self.run(self.requests, self.broken, False, 0.3)
        self.run(self.websockets)
        self.run(self.bad_handshakes)

    def requests(self, addr, tls, pause):
        host, port = addr.rsplit(":", 1)
        paths = ["/"] * 14 + ["/slow", "/big", "/missing", "/fail"]
        i = 0
        conn = None
        while not self.stopping.is_set():
            if conn is None:
                if tls:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=context)
                else:
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
            path = paths[i % len(paths)]
            i += 1
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                self.count(f"{addr} {response.status}")
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                self.count(f"{addr} error")
                conn = None
            # A new connection (and TLS handshake) now and then.
            if conn is not None and i % 25 == 0:
                conn.close()
                conn = None
            self.stopping.wait(pause)

    def websocket(self, addr):
        host, port = addr.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise OSError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        sock.sendall(b"hello")
        sock.recv(16)
        return sock

    def websockets(self):
        # Some held open for the whole run, others opened and closed by the client.
        for _ in range(6):
            try:
                self.held.append(self.websocket(self.todos))
            except OSError:
                self.count("websocket error")
        while not self.stopping.is_set():
            try:
                self.websocket(self.todos).close()
                self.count("websocket")
            except OSError:
                self.count("websocket error")
            self.stopping.wait(0.5)

    def bad_handshakes(self):
        host, port = self.chat.rsplit(":", 1)
        while not self.stopping.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=5) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(64)
            except OSError:
                pass
            self.count("bad handshake")
            self.stopping.wait(1.0)


# --- traffic through a cluster's proxy pods (--against-cluster) ------------------------------------

def insecure_tls():
    """A client TLS context that takes any certificate (the test apps' are self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(url, timeout=10):
    """An HTTP(S)Connection to http(s)://HOST:PORT."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        return http.client.HTTPSConnection(parsed.hostname, parsed.port, timeout=timeout, context=insecure_tls())
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)


class WebSocket:
    """A client WebSocket (RFC 6455, masked frames) on a plain or TLS socket."""

    def __init__(self, url, path, timeout=10):
        parsed = urllib.parse.urlsplit(url)
        sock = socket.create_connection((parsed.hostname, parsed.port), timeout=timeout)
        if parsed.scheme == "https":
            try:
                sock = insecure_tls().wrap_socket(sock, server_hostname=parsed.hostname)
            except OSError:
                sock.close()
                raise
        self.sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                self.sock.close()
                raise OSError("closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            self.sock.close()
            raise OSError(head.split(b"\r\n", 1)[0].decode(errors="replace"))

    def send(self, payload, opcode=0x1):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def frame(self):
        """(opcode, payload) of a whole frame at the head of the buffer (taken off it), or None."""
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            n, at = (int.from_bytes(b[2:4], "big"), 4) if len(b) >= 4 else (None, 4)
        elif n == 127:
            n, at = (int.from_bytes(b[2:10], "big"), 10) if len(b) >= 10 else (None, 10)
        if n is None or len(b) < at + n:
            return None
        self.buf = b[at + n:]
        return b[0] & 0x0F, b[at:at + n]

    def recv(self):
        """The next text or binary frame's payload (server frames are not masked)."""
        while True:
            frame = self.frame()
            if frame is None:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                self.buf += chunk
                continue
            opcode, payload = frame
            if opcode == 0x8:
                raise OSError("closed by the server")
            if opcode in (0x1, 0x2):
                return payload

    def close(self):
        try:
            self.send((1000).to_bytes(2, "big"), 0x8)
        except OSError:
            pass
        self.sock.close()


class ClusterTraffic(Clients):
    """Clients of each proxy pod's client port until stop(): GETs (200s, a 404, a slower one) and
    a burst of 40 every 5 s (429s from a rate-limited app); sessions: when the app serves SockJS
    at /sockjs (e2e/routing/backend.js, also the loopback control plane's stand-in for
    traefik/whoami), raw SockJS WebSockets (/sockjs/websocket, two held for the whole run) and
    SockJS xhr-polling sessions, otherwise WebSockets to /echo (traefik/whoami's echo); on an
    HTTPS port, plain HTTP now and then (a failed TLS handshake). Nothing here fails the test but
    a proxy through which no request got a 200 (silent())."""

    def __init__(self, proxies):
        super().__init__()
        self.proxies = proxies  # [(label, http(s)://HOST:PORT)]

    def start(self):
        for label, url in self.proxies:
            sockjs = self.serves_sockjs(url)
            log(f"traffic through {label} ({url}): GETs, bursts, "
                f"{'SockJS sessions' if sockjs else 'WebSockets to /echo'}"
                f"{', plain HTTP to its HTTPS port' if url.startswith('https:') else ''}")
            self.run(self.requests, label, url)
            self.run(self.bursts, label, url)
            self.run(self.sessions, url, sockjs)
            if url.startswith("https:"):
                self.run(self.bad_handshakes, url)

    def silent(self):
        """The proxies through which no request was answered 200."""
        return [label for label, _ in self.proxies if not self.counts.get(f"{label} 200")]

    @staticmethod
    def serves_sockjs(url):
        try:
            conn = connect(url)
            conn.request("GET", "/sockjs/info")
            response = conn.getresponse()
            body = response.read()
            conn.close()
            return response.status == 200 and "websocket" in json.loads(body)
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def get(self, label, url, conn, path):
        """One GET on conn (a new one when None); returns the connection to reuse, or None."""
        try:
            conn = conn or connect(url)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            self.count(f"{label} {response.status}")
            if response.getheader("Connection", "").lower() != "close":
                return conn
        except (OSError, http.client.HTTPException):
            self.count(f"{label} error")
        if conn is not None:
            conn.close()
        return None

    def requests(self, label, url):
        paths = ["/"] * 8 + ["/peer/whoami", "/peer/burn?ms=20", "/e2e-monitoring-missing"]
        conn = None
        i = 0
        while not self.stopping.is_set():
            conn = self.get(label, url, conn, paths[i % len(paths)])
            i += 1
            if conn is not None and i % 25 == 0:  # a new connection (and TLS handshake) now and then
                conn.close()
                conn = None
            self.stopping.wait(0.1)
        if conn is not None:
            conn.close()

    def bursts(self, label, url):
        while not self.stopping.wait(5):
            conn = None
            for _ in range(40):
                conn = self.get(label, url, conn, "/")
            if conn is not None:
                conn.close()

    def websocket(self, url, sockjs):
        """A WebSocket that answered: SockJS's hello then the echo of a message, or /echo's echo."""
        ws = WebSocket(url, "/sockjs/websocket" if sockjs else "/echo")
        try:
            if sockjs:
                ws.recv()  # {"backend": ..., "hello": true}
            ws.send(b"monitoring")
            ws.recv()
        except OSError:
            ws.close()
            raise
        return ws

    def xhr_session(self, url):
        """A SockJS xhr-polling session: open, the hello, a message sent and its echo."""
        base = f"/sockjs/{int.from_bytes(os.urandom(2), 'big') % 1000:03d}/{os.urandom(6).hex()}"
        conn = connect(url)
        cookie = {}

        def post(path, body=b""):
            headers = {"Content-Type": "text/plain"}
            if cookie:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookie.items())
            conn.request("POST", base + path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    k, _, v = value.split(";", 1)[0].partition("=")
                    cookie[k.strip()] = v.strip()
            return response.status, text

        try:
            replies = []
            status, text = post("/xhr")
            if status != 200 or not text.startswith("o"):
                raise OSError(f"open: {status} {text[:40]!r}")
            status, text = post("/xhr_send", json.dumps(["monitoring"]).encode())
            if status not in (200, 204):
                raise OSError(f"send: {status} {text[:40]!r}")
            while len(replies) < 2:
                status, text = post("/xhr")
                if status != 200 or not text.startswith("a"):
                    raise OSError(f"poll: {status} {text[:40]!r}")
                replies += json.loads(text[1:])
        finally:
            conn.close()

    def sessions(self, url, sockjs):
        for _ in range(2):
            try:
                self.held.append(self.websocket(url, sockjs))
                self.count("websocket held")
            except (OSError, ValueError):
                self.count("websocket error")
        i = 0
        while not self.stopping.is_set():
            i += 1
            if sockjs and i % 2 == 0:
                try:
                    self.xhr_session(url)
                    self.count("sockjs xhr-polling session")
                except (OSError, ValueError, http.client.HTTPException):
                    self.count("sockjs xhr-polling error")
            else:
                try:
                    self.websocket(url, sockjs).close()
                    self.count("websocket")
                except (OSError, ValueError):
                    self.count("websocket error")
            self.stopping.wait(0.5)

    def bad_handshakes(self, url):
        parsed = urllib.parse.urlsplit(url)
        while not self.stopping.wait(2.0):
            try:
                with socket.create_connection((parsed.hostname, parsed.port), timeout=5) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(64)
            except OSError:
                pass
            self.count("plain HTTP to an HTTPS port")


# --- Prometheus -----------------------------------------------------------------------------------

def export_app_dashboard(prom, start, end, out):
    """The "Meteor / App" panels for app todos, as query_range results (without the first 20
    seconds of a long run, while rate windows still fill)."""
    if end - start > 60:
        start += 20
    board = json.load(open(os.path.join(DASHBOARDS, "app.json")))
    binding = {"namespace": NAMESPACE, "app": "todos"}
    panels = []
    step = max(1, int((end - start) / 150))
    for panel in board["panels"]:
        if panel["type"] == "row":
            panels.append({"type": "row", "title": panel["title"], "gridPos": panel["gridPos"]})
            continue
        entry = {"type": panel["type"], "title": panel["title"], "gridPos": panel["gridPos"],
                 "unit": panel.get("fieldConfig", {}).get("defaults", {}).get("unit"),
                 "decimals": panel.get("fieldConfig", {}).get("defaults", {}).get("decimals"), "series": []}
        for target in panel["targets"]:
            expr = substitute(target["expr"], {**binding, "__rate_interval": "15s"})
            if target.get("instant") or panel["type"] in ("stat", "table"):
                result = prom.api("query", query=expr, time=f"{end:.3f}")["result"]
                for r in result:
                    entry["series"].append({"legend": legend(target.get("legendFormat", ""), r["metric"]),
                                            "metric": r["metric"], "value": float(r["value"][1])})
            else:
                result = prom.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)["result"]
                for r in result:
                    entry["series"].append({"legend": legend(target.get("legendFormat", ""), r["metric"]),
                                            "points": [[float(t) - start, float(v)] for t, v in r["values"]]})
        panels.append(entry)
    with open(out, "w") as f:
        json.dump({"title": board["title"], "binding": binding, "seconds": end - start, "panels": panels}, f, indent=1)


# --- main -----------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operator", default=os.path.join(ROOT, "target", "debug", "meteor-operator"))
    parser.add_argument("--seconds", type=int, default=40, help="traffic under scrape before the checks")
    parser.add_argument("--timeout", type=int, default=300, help="the whole run, at most")
    parser.add_argument("--data", help="write the app dashboard's data for todos here (JSON)")
    parser.add_argument("--png", help="render the app dashboard into this PNG (needs --data or a temp file)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, TSDB)")
    cluster = parser.add_argument_group("against a cluster (--against-cluster)")
    cluster.add_argument("--against-cluster", action="store_true",
                         help="scrape a running operator and running proxy pods instead of starting them")
    cluster.add_argument("--operator-metrics", metavar="URL", help="the operator's metrics, e.g. http://127.0.0.1:18080/metrics")
    cluster.add_argument("--proxy-targets", metavar="NS/APP/POD=ADMIN[+URL],...",
                         help="each proxy pod: its admin address (host:port, /metrics is scraped) and the "
                              "URL of its client port (default: http://, the admin host and --proxy-http-port)")
    cluster.add_argument("--proxy-http-port", type=int, default=8080, help="the proxies' HTTP port (default 8080)")
    cluster.add_argument("--apps", metavar="NS/APP,...",
                         help="the app and proxy dashboards' variable bindings (default: the apps of --proxy-targets)")
    args = parser.parse_args()

    for tool in ("prometheus",):
        if not shutil.which(tool):
            print(f"cannot run: {tool} not on PATH (bash hack/install-tools.sh installs Debian's prometheus)")
            return 2
    if args.against_cluster:
        return against_cluster(args, parser)
    if not os.access(args.operator, os.X_OK):
        print(f"cannot run: {args.operator} is not built (cargo build --bin meteor-operator)")
        return 2

    arm_timeout(args.timeout)

    workdir = tempfile.mkdtemp(prefix="meteor-live-")
    procs = Procs(workdir)
    api = None
    traffic = None
    servers = []
    try:
        # Backends and proxies.
        for _ in range(3):
            server, addr = start_backend()
            servers.append((server, addr))
        closed = f"127.0.0.1:{free_port()}"
        todos = start_proxy(procs, args.operator, "todos", [servers[0][1], servers[1][1]])
        chat = start_proxy(procs, args.operator, "chat", [servers[2][1]],
                           ["--tls-cert", os.path.join(TLS, "cert.pem"), "--tls-key", os.path.join(TLS, "key.pem"),
                            "--rate-limit", "8", "--rate-burst", "8"])
        broken = start_proxy(procs, args.operator, "broken", [closed])
        log(f"proxies: todos {todos[0]} (admin {todos[1]}), chat {chat[0]} TLS, broken {broken[0]}")

        # The operator against the fake API server.
        api = fake_apiserver.fleet(NAMESPACE)
        host, port = api.serve()
        kubeconfig = os.path.join(workdir, "kubeconfig")
        with open(kubeconfig, "w") as f:
            f.write(f"apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://{host}:{port}\"}}}}]\n"
                    "users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
        operator_admin = f"127.0.0.1:{free_port()}"
        operator, operator_log = procs.start("operator", [args.operator, "run", "--admin-addr", operator_admin,
                                                          "--lease-namespace", "meteor-system"],
                                             {"KUBECONFIG": kubeconfig, "POD_NAMESPACE": "meteor-system",
                                              "POD_NAME": "live-test", "RUST_LOG": "info"})
        wait_for_line(operator_log, r"acquired the leader lease", operator)
        log(f"operator: admin {operator_admin}, leading, fake API server http://{host}:{port}")

        # Prometheus.
        proxies = [(todos, "todos"), (chat, "chat"), (broken, "broken")]
        prom = start_prometheus(procs, workdir, [
            {"job_name": OPERATOR_JOB, "honor_labels": True,
             "static_configs": [{"targets": [operator_admin]}]},
            {"job_name": "meteor-proxies", "honor_labels": True,
             "static_configs": [{"targets": [p[1]], "labels": {"namespace": NAMESPACE, "app": a}} for p, a in proxies]},
        ])
        log(f"prometheus: {prom.url}, scraping every second")
        start = time.time()

        traffic = Traffic(todos[0], chat[0], broken[0])
        traffic.start()
        deadline = start + args.seconds
        while time.time() < deadline:
            procs.check_alive()
            time.sleep(1)
        log("traffic: " + ", ".join(f"{k}: {v}" for k, v in sorted(traffic.counts.items())))

        targets = prom.api("targets")["activeTargets"]
        down = [t["scrapeUrl"] + ": " + t.get("lastError", "") for t in targets if t["health"] != "up"]
        if down or len(targets) != 4:
            raise SystemExit(f"FAILED: targets not all up ({len(targets)}): {down}")
        scrapes = [http_get(f"http://{a}/metrics")[1].decode() for a in (operator_admin, todos[1], chat[1], broken[1])]
        checker = Checker(prom, declared_families(scrapes), start - 5)
        rows = check_dashboards(checker, BINDINGS)
        rows += check_all(prom, checker, {"namespace": NAMESPACE, "app": "todos"})
        end = time.time()
        if args.data or args.png:
            data = args.data or os.path.join(workdir, "app-dashboard.json")
            export_app_dashboard(prom, start, end, data)
            log(f"app dashboard data: {data}")
            if args.png:
                subprocess.run(["/usr/bin/python3", os.path.join(HERE, "render-dashboard.py"), data, args.png], check=True)
                log(f"rendered {args.png}")
        traffic.stop()
        traffic = None
        return report(prom, checker, rows, "live-test")
    finally:
        signal.alarm(0)
        if traffic:
            traffic.stop()
        procs.stop()
        if api:
            api.stop()
        for server, _ in servers:
            server.shutdown()
        if args.keep:
            print(f"    kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_proxy_targets(text, http_port):
    """NS/APP/POD=ADMIN[+URL],... -> [{namespace, app, pod, admin, url}]."""
    proxies = []
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, _, addresses = item.partition("=")
        parts = name.split("/")
        admin, _, url = addresses.partition("+")
        url = url or f"http://{admin.rsplit(':', 1)[0]}:{http_port}"
        parsed = urllib.parse.urlsplit(url)
        if len(parts) != 3 or not all(parts) or ":" not in admin or parsed.scheme not in ("http", "https") \
                or not parsed.port:
            raise ValueError(f"--proxy-targets: not NS/APP/POD=HOST:PORT[+http(s)://HOST:PORT]: {item!r}")
        proxies.append({"namespace": parts[0], "app": parts[1], "pod": parts[2], "admin": admin,
                        "url": f"{parsed.scheme}://{parsed.netloc}"})
    return proxies


def against_cluster(args, parser):
    """--against-cluster: Prometheus scrapes the given operator and proxy pods (labelled as the
    chart's ServiceMonitor and PodMonitor label them), traffic through the proxies, the checks."""
    try:
        proxies = parse_proxy_targets(args.proxy_targets, args.proxy_http_port)
    except ValueError as e:
        parser.error(str(e))
    if not args.operator_metrics or not proxies:
        parser.error("--against-cluster needs --operator-metrics and --proxy-targets")
    operator = urllib.parse.urlsplit(args.operator_metrics)
    if operator.scheme not in ("http", "https") or not operator.netloc:
        parser.error(f"--operator-metrics: not an http(s) URL: {args.operator_metrics}")
    if args.apps:
        apps = [a.strip().split("/") for a in args.apps.split(",") if a.strip()]
        if not all(len(a) == 2 and all(a) for a in apps):
            parser.error(f"--apps: not NS/APP,...: {args.apps}")
    else:
        apps = []
        for p in proxies:
            if [p["namespace"], p["app"]] not in apps:
                apps.append([p["namespace"], p["app"]])
    app_bindings = [{"namespace": ns, "app": app} for ns, app in apps]
    bindings = {"fleet": [{"job": OPERATOR_JOB}], "app": app_bindings, "proxy": app_bindings}
    proxied = [b for b in app_bindings if any((p["namespace"], p["app"]) == (b["namespace"], b["app"]) for p in proxies)]
    if not proxied:
        parser.error("--apps: none of them has a proxy in --proxy-targets")

    arm_timeout(args.timeout)

    workdir = tempfile.mkdtemp(prefix="meteor-live-cluster-")
    procs = Procs(workdir)
    traffic = None
    try:
        prom = start_prometheus(procs, workdir, [
            {"job_name": OPERATOR_JOB, "honor_labels": True, "scheme": operator.scheme,
             "metrics_path": operator.path or "/metrics", "static_configs": [{"targets": [operator.netloc]}]},
            {"job_name": PROXY_JOB, "honor_labels": True,
             "static_configs": [{"targets": [p["admin"]],
                                 "labels": {"namespace": p["namespace"], "app": p["app"], "pod": p["pod"],
                                            "container": "proxy", "endpoint": "admin"}} for p in proxies]},
        ])
        log(f"prometheus: {prom.url}, scraping every second: the operator ({args.operator_metrics}, job {OPERATOR_JOB}) "
            f"and {len(proxies)} proxy pods (job {PROXY_JOB})")
        for p in proxies:
            log(f"proxy {p['namespace']}/{p['app']}/{p['pod']}: admin {p['admin']}, clients {p['url']}")
        wait_targets_up(prom, 1 + len(proxies), 60)
        log("every target up")
        start = time.time()

        traffic = ClusterTraffic([(f"{p['app']}/{p['pod']}", p["url"]) for p in proxies])
        traffic.start()
        deadline = start + args.seconds
        while time.time() < deadline:
            procs.check_alive()
            time.sleep(1)
        log("traffic: " + ", ".join(f"{k}: {v}" for k, v in sorted(traffic.counts.items())))

        wait_targets_up(prom, 1 + len(proxies), 5)
        scrapes = [http_get(args.operator_metrics)[1].decode()]
        scrapes += [http_get(f"http://{p['admin']}/metrics")[1].decode() for p in proxies]
        checker = Checker(prom, declared_families(scrapes), start - 5)
        for label in traffic.silent():
            checker.failures.append(f"traffic: no request through proxy {label} was answered 200, so its series say nothing")
        rows = check_dashboards(checker, bindings, owner="--apps")
        rows += check_all(prom, checker, proxied[0])
        traffic.stop()
        traffic = None
        panels, rules, variables, empty = counts(rows)
        return report(prom, checker, rows, "live-test --against-cluster",
                      extra=f"{len(rows) - 1} expressions evaluated; {empty} of the {panels} panel queries {NO_SERIES} "
                            f"(apps {', '.join(b['namespace'] + '/' + b['app'] for b in app_bindings)})")
    finally:
        signal.alarm(0)
        if traffic:
            traffic.stop()
        procs.stop()
        if args.keep:
            print(f"    kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def wait_targets_up(prom, want, seconds):
    """All `want` scrape targets up (their last scrape succeeded), within `seconds`."""
    deadline = time.time() + seconds
    while True:
        targets = prom.api("targets")["activeTargets"]
        down = [t["scrapeUrl"] + ": " + (t.get("lastError") or t["health"]) for t in targets if t["health"] != "up"]
        if not down and len(targets) == want:
            return
        if time.time() >= deadline:
            raise SystemExit(f"FAILED: targets not all up ({len(targets)} of {want}) within {seconds}s: {down}")
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
