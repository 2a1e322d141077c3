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
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import fake_apiserver  # noqa: E402

NAMESPACE = "shop"
OPERATOR_JOB = "meteor-operator-metrics"
RULES = os.path.join(HERE, "rules", "meteor-operator.rules.yaml")
DASHBOARDS = os.path.join(HERE, "dashboards")
TLS = os.path.join(ROOT, "proxy", "tests", "peers", "tls")
# Each dashboard's variable bindings: a panel must return data for at least one of them.
BINDINGS = {
    "fleet": [{"job": OPERATOR_JOB}],
    "app": [{"namespace": NAMESPACE, "app": "todos"}, {"namespace": NAMESPACE, "app": "chat"}],
    "proxy": [{"namespace": NAMESPACE, "app": a} for a in ("todos", "chat", "broken")],
}
GRAFANA = {"__rate_interval": "30s", "__interval": "5s", "__range": "5m"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2"}


def log(message):
    print(f"    {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

class Procs:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, env=None):
        log_path = os.path.join(self.workdir, f"{name}.log")
        out = open(log_path, "wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.append((name, proc, log_path))
        return proc, log_path

    def stop(self):
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + 10
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check_alive(self):
        for name, proc, log_path in self.procs:
            if proc.poll() is not None:
                tail = open(log_path, errors="replace").read()[-2000:]
                raise SystemExit(f"FAILED: {name} exited ({proc.returncode}):\n{tail}")


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


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if http_get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAILED: {url} did not answer 200 within {seconds}s")


# --- traffic --------------------------------------------------------------------------------------

class Traffic:
    """Clients of the three proxies until stop() (rates kept small: two shared cores)."""

    def __init__(self, todos, chat, broken):
        self.todos, self.chat, self.broken = todos, chat, broken
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

    def start(self):
        self.run(self.requests, self.todos, False, 0.03)
        self.run(self.requests, self.todos, False, 0.05)
        self.run(self.requests, self.chat, True, 0.02)
        self.run(self.requests, self.broken, False, 0.3)
        self.run(self.websockets)
        self.run(self.bad_handshakes)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)
        for sock in self.held:
            sock.close()

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


# --- Prometheus -----------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url):
        self.url = url

    def api(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        try:
            return self.api("query", query=expr)["result"], None
        except urllib.error.HTTPError as e:
            return None, e.read().decode(errors="replace")[:300]

    def series(self, name, start):
        return self.api("series", **{"match[]": name, "start": f"{start:.3f}"})


def declared_families(texts):
    """Metric names a scrape declares (# TYPE), with the sample names they stand for."""
    names = set()
    for text in texts:
        for match in re.finditer(r"^# TYPE (\S+) (\w+)", text, re.M):
            name, kind = match.groups()
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind == "histogram":
                names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def substitute(expr, binding):
    values = {**GRAFANA, **binding}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def selectors(expr):
    """(metric name, matchers text) of every vector selector in a PromQL expression."""
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found = []
    for m in re.finditer(r"(?<![\w.$\"])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matchers = m.group(1), m.group(2) or ""
        if name in KEYWORDS:
            continue
        if not matchers and text[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        found.append((name, matchers))
    return found


def label_names(matchers):
    return re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", matchers)


def variable_selector(query):
    """label_values(SELECTOR, LABEL) -> (SELECTOR, LABEL)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", query)
    return (m.group(1), m.group(2)) if m else (None, None)


class Checker:
    def __init__(self, prom, declared, start):
        self.prom, self.declared, self.start = prom, declared, start
        self.failures = []
        self.conditional = {}
        self._labels = {}

    def labels_of(self, name):
        if name not in self._labels:
            keys = set()
            for series in self.prom.series(name, self.start):
                keys.update(series)
            self._labels[name] = keys
        return self._labels[name]

    def check_selectors(self, where, expr):
        """Every metric known, every label name carried. Returns whether every selector matched
        series right now."""
        all_matched = True
        for name, matchers in selectors(expr):
            labels = self.labels_of(name)
            if not labels:
                if name in self.declared:
                    self.conditional.setdefault(name, set()).add(where)
                    all_matched = False
                else:
                    self.failures.append(f"{where}: no series {name} and no scrape declares it (misspelled or missing): {expr}")
                continue
            for label in label_names(matchers):
                if label not in labels:
                    self.failures.append(f"{where}: no series of {name} has a label {label!r} (it has {sorted(labels - {'__name__'})}): {expr}")
            if matchers:
                result, error = self.prom.query(f"{name}{matchers}")
                if error or not result:
                    self.conditional.setdefault(f"{name}{matchers}", set()).add(where)
                    all_matched = False
        return all_matched

    def evaluate(self, where, expr):
        result, error = self.prom.query(expr)
        if error:
            self.failures.append(f"{where}: Prometheus refused the expression: {error}: {expr}")
            return None
        return result


def check_dashboards(checker):
    rows = []
    for path in sorted(os.listdir(DASHBOARDS)):
        if not path.endswith(".json"):
            continue
        name = path[:-5]
        board = json.load(open(os.path.join(DASHBOARDS, path)))
        bindings = BINDINGS.get(name)
        if bindings is None:
            checker.failures.append(f"{path}: no variable bindings in live-test.py BINDINGS")
            continue
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector, label = variable_selector(query)
            where = f"{name} variable ${variable['name']}"
            if selector is None:
                checker.failures.append(f"{where}: not a label_values(selector, label) query: {query}")
                continue
            ok = False
            for binding in bindings:
                expr = substitute(f"count by ({label}) ({selector})", binding)
                checker.check_selectors(where, substitute(selector, binding))
                result = checker.evaluate(where, expr)
                ok = ok or any(r["metric"].get(label) for r in result or [])
            if not ok:
                checker.failures.append(f"{where}: {query} gives no value for any binding")
            rows.append((where, "values" if ok else "NONE"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                where = f"{name} / {panel['title']} / {target['refId']}"
                data = check_panel_expr(checker, where, target["expr"], bindings)
                rows.append((where, "data" if data else "declared, no series here"))
    return rows


def check_panel_expr(checker, where, expr, bindings):
    """A panel's query: its selectors known, and data for some binding unless a selector matched
    nothing (a series that exists only under some condition). Returns whether it had data."""
    data = False
    matched = True
    for binding in bindings:
        bound = substitute(expr, binding)
        matched = checker.check_selectors(where, bound) and matched
        data = bool(checker.evaluate(where, bound)) or data
    if not data and matched:
        checker.failures.append(f"{where}: returns nothing for every binding although each selector matched series: {expr}")
    return data


def self_check(prom, declared, start):
    """The checker catches what it is for: each of these must fail."""
    bindings = [{"namespace": NAMESPACE, "app": "todos"}]
    broken = {
        "a misspelled metric": 'sum(rate(meteor_proxy_request_duraton_seconds_count{namespace="$namespace"}[1m]))',
        "a misspelled label": 'max(meteor_app_condition{namespace="$namespace",aap="$app"})',
        "a join that cannot match": 'meteor_app_replicas_ready{namespace="$namespace",app="$app"} / on (backend) meteor_proxy_active_sessions{namespace="$namespace",app="$app"}',
    }
    missed = []
    for what, expr in broken.items():
        checker = Checker(prom, declared, start)
        check_panel_expr(checker, "self-check", expr, bindings)
        if not checker.failures:
            missed.append(what)
    return missed


def check_rules(checker, prom):
    import yaml
    rows = []
    groups = yaml.safe_load(open(RULES))["groups"]
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            where = f"rule {name}"
            checker.check_selectors(where, rule["expr"])
            result = checker.evaluate(where, rule["expr"])
            rows.append((where, f"returns {len(result)} series" if result else "returns nothing now"))
    live = prom.api("rules")["groups"]
    loaded = 0
    for group in live:
        for rule in group["rules"]:
            loaded += 1
            if rule.get("health") != "ok":
                checker.failures.append(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
    want = sum(len(g["rules"]) for g in groups)
    if loaded != want:
        checker.failures.append(f"Prometheus loaded {loaded} rules, the file has {want}")
    return rows


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


def legend(fmt, metric):
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()
    return text or ",".join(f"{k}={v}" for k, v in metric.items() if k != "__name__")


# --- main -----------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operator", default=os.path.join(ROOT, "target", "debug", "meteor-operator"))
    parser.add_argument("--seconds", type=int, default=40, help="traffic under scrape before the checks")
    parser.add_argument("--timeout", type=int, default=300, help="the whole run, at most")
    parser.add_argument("--data", help="write the app dashboard's data for todos here (JSON)")
    parser.add_argument("--png", help="render the app dashboard into this PNG (needs --data or a temp file)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, TSDB)")
    args = parser.parse_args()

    for tool in ("prometheus",):
        if not shutil.which(tool):
            print(f"cannot run: {tool} not on PATH (bash hack/install-tools.sh installs Debian's prometheus)")
            return 2
    if not os.access(args.operator, os.X_OK):
        print(f"cannot run: {args.operator} is not built (cargo build --bin meteor-operator)")
        return 2

    def expire(*_):
        raise TimeoutError(f"the live test ran past --timeout {args.timeout}s")
    signal.signal(signal.SIGALRM, expire)
    signal.alarm(args.timeout)

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
        prom_port = free_port()
        config = os.path.join(workdir, "prometheus.yml")
        proxies = [(todos, "todos"), (chat, "chat"), (broken, "broken")]
        with open(config, "w") as f:
            json.dump({
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [RULES],
                "scrape_configs": [
                    {"job_name": OPERATOR_JOB, "honor_labels": True,
                     "static_configs": [{"targets": [operator_admin]}]},
                    {"job_name": "meteor-proxies", "honor_labels": True,
                     "static_configs": [{"targets": [p[1]], "labels": {"namespace": NAMESPACE, "app": a}} for p, a in proxies]},
                ],
            }, f)
        prometheus, prom_log = procs.start("prometheus", [
            "prometheus", f"--config.file={config}", f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn", "--storage.tsdb.retention.time=1h"])
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        wait_http(f"{prom.url}/-/ready", 60)
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
        rows = check_dashboards(checker)
        rows += check_rules(checker, prom)
        missed = self_check(prom, checker.declared, start - 5)
        if missed:
            checker.failures.append(f"self-check: the checker did not catch {', '.join(missed)}")
        else:
            rows.append(("self-check: a misspelled metric, a misspelled label, a join that cannot match", "each caught"))
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

        width = max(len(r[0]) for r in rows)
        print()
        for where, what in rows:
            print(f"    {where:<{width}}  {what}")
        if checker.conditional:
            print("\n    declared by the scrapes, no series in this run (series that exist only under")
            print("    conditions the run does not create), by selector:")
            for selector, wheres in sorted(checker.conditional.items()):
                print(f"      {selector}  ({len(wheres)} uses)")
        firing = [a for a in prom.api("alerts")["alerts"]]
        print("\n    alerts Prometheus holds now: " +
              (", ".join(sorted(f"{a['labels']['alertname']}({a['labels'].get('app', '')}) {a['state']}" for a in firing)) or "none"))
        panels = sum(1 for r in rows if " / " in r[0])
        print(f"\n    {panels} panel queries, {sum(1 for r in rows if r[0].startswith('rule '))} rules, "
              f"{sum(1 for r in rows if 'variable' in r[0])} variable queries checked")
        if checker.failures:
            print()
            for failure in checker.failures:
                print(f"    FAIL {failure}")
            print(f"\nlive-test: FAILED ({len(checker.failures)} problems)")
            return 1
        print("\nlive-test: passed")
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
