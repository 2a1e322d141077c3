#!/usr/bin/env python3
"""Benchmark of the sticky proxy (`meteor-proxy`) beside HAProxy and nginx (and no proxy).

Run through bench/run.sh, which installs the tools and builds the proxy. Everything listens on
127.0.0.1, every phase is bounded in time, every process started here is stopped at the end.
Each proxy gets one worker thread and the same backends, configured the way the seeds do it:
sticky cookie, leastconn (nginx: consistent hash of a cookie, its closest open-source match),
WebSocket upgrade and long tunnel timeouts, active health checks (interval 750 ms, rise 2,
fall 2, timeout 1000 ms; nginx OSS has only passive checks).

Phases (`bench.py PHASE...` runs some; the default is all, in this order):
 get    small GET: max requests/s (wrk -t1 -c64) without and with the sticky cookie, and the
        proxy's CPU time per request; p50/p99 and CPU per request at fixed rates (oha -q,
        latency corrected)
 msg    WebSocket messages: 1,000 open WebSockets, each echoing DDP-sized messages through the
        proxy with a bench-only `ws` backend; messages/s and proxy CPU per message
 ws     idle WebSockets, plain and over TLS: proxy memory per connection, connect rate, drops
 churn  stickiness under churn: xhr-polling SockJS sessions with a browser-like cookie jar while
        a backend is added, one removed (drained) and one killed; violations, errors, failover
        time, and WebSockets dropped on backends that stayed alive.
 hostile  ours and HAProxy only (the default run includes it): memory per connection in each
        state (idle, slow head, idle keep-alive, slow reader, idle WebSocket), then slowloris
        heads from 40 addresses, slow readers from 20, oversized heads and an idle-connection
        flood from one address, HOSTILE_SECONDS each on a fresh proxy, beside a well-behaved
        client from another address: peak memory (RSS + the kernel's socket memory), CPU,
        what the attackers held, and whether the well-behaved client was served.
Measured phases run ROUNDS interleaved rounds, in a random order in each round (BENCH_SEED
fixes it), and keep the medians. Proxy CPU is the proxy's own counters (/proc/PID/stat utime +
stime of the process and its children, e.g. nginx's master and worker) over the measured window.
"""

import http.client
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "/tmp/meteor-proxy-bench"
PROXY_BIN = os.environ.get("PROXY_BIN", os.path.join(ROOT, "target/release/meteor-proxy"))
# `meteor-proxy FLAGS` is `meteor-operator proxy FLAGS`; either binary may be benchmarked.
PROXY_CMD = [PROXY_BIN] + (["proxy"] if os.path.basename(PROXY_BIN) == "meteor-operator" else [])
PEERS = os.path.join(ROOT, "proxy/tests/peers")
TLS_CERT, TLS_KEY = (os.path.join(PEERS, "tls", f) for f in ("cert.pem", "key.pem"))
WSLOAD = os.path.join(ROOT, "bench/wsload.js")
QUICK = os.environ.get("BENCH_QUICK") == "1"
SEED = int(os.environ.get("BENCH_SEED", str(time.time_ns() % 1_000_000)))
ROUNDS = 1 if QUICK else 5
WRK_SECONDS = 2 if QUICK else 4
# oha seconds per fixed rate: each run has rate × seconds requests, 1 % of them above its p99.
LATENCY_SECONDS = {1000: 2, 4000: 1} if QUICK else {1000: 6, 4000: 3}
MSG_SOCKETS = 1000
MSG_SECONDS = 2 if QUICK else 5
WS_IDLE_SECONDS = 3
# TLS handshakes are slow on a loaded 2-core machine (under 100/s seen): fewer, to bound the run.
WS_TLS_COUNT = 3000
CHURN_STEP = 2.0 if QUICK else 3.0
COOKIE_NAMES = ("meteor-sticky", "meteor_sticky")  # ours and HAProxy's; nginx's
CLK_TCK = os.sysconf("SC_CLK_TCK")
PERF_EVENT = os.environ.get("BENCH_PERF_EVENT", "instructions")

procs = []


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start(cmd, **kw):
    p = subprocess.Popen(cmd, stdout=kw.pop("stdout", subprocess.DEVNULL),
                         stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
    procs.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


# ---------------------------------------------------------------- process counters


def process_tree(pid):
    """`pid` and all its descendants (nginx: the master and its worker)."""
    tree = [pid]
    for p in tree:  # grows while it is walked
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    tree.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return tree


def cpu_seconds(pid):
    """(user, system) CPU seconds of the process tree (all threads), from /proc/PID/stat."""
    user = system = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        user += int(fields[11])  # utime, stime: fields 14 and 15 of stat
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def rss_kib(pid):
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total


def perf_works():
    """Whether `perf stat` can count PERF_EVENT here (a VM often exposes no hardware counters)."""
    try:
        err = subprocess.run(["perf", "stat", "-x,", "-e", PERF_EVENT, "true"],
                             capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired):
        return False
    value = next((l.split(",")[0] for l in err.splitlines() if f",{PERF_EVENT}" in l), "")
    return bool(re.fullmatch(r"[\d.]+", value))


PERF = perf_works()


class Window:
    """The proxy's CPU seconds (and PERF_EVENT count, where perf works) over a measured run."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.perf = None
        if proxy and PERF:
            pids = ",".join(str(p) for p in process_tree(proxy.p.pid))
            self.perf = start(["perf", "stat", "-x,", "-e", PERF_EVENT, "-p", pids],
                              stderr=subprocess.PIPE, text=True)
            time.sleep(0.2)  # perf attaches before the load starts
        self.cpu0 = proxy.cpu() if proxy else None

    def close(self, units):
        """Per-unit figures: CPU µs (and PERF_EVENT count) per request or message."""
        if not self.proxy:
            return {}
        (user0, system0), (user1, system1) = self.cpu0, self.proxy.cpu()
        per_unit = 1e6 / max(units, 1)
        out = dict(cpu_us=(user1 - user0 + system1 - system0) * per_unit,
                   user_us=(user1 - user0) * per_unit)
        if self.perf:
            self.perf.send_signal(signal.SIGINT)
            err = self.perf.communicate(timeout=10)[1]
            value = next(l.split(",")[0] for l in err.splitlines() if f",{PERF_EVENT}" in l)
            out["perf"] = float(value) / max(units, 1)
        return out


# ---------------------------------------------------------------- backends


def nginx_static_backends(ports):
    """Fast static backends for the small-GET phase: one nginx, one worker, a server per port."""
    d = f"{WORK}/static"
    os.makedirs(d, exist_ok=True)
    servers = "\n".join(
        f"""server {{ listen 127.0.0.1:{p} reuseport; keepalive_requests 1000000;
              location / {{ add_header X-Backend b{i}; return 200 "b{i}\\n"; }}
              location = /big {{ default_type application/octet-stream; alias {d}/big.bin; }} }}"""
        for i, p in enumerate(ports, 1))
    with open(f"{d}/big.bin", "wb") as f:  # for the hostile phase's slow readers
        f.write(b"x" * BIG_BODY)
    conf = f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; {temp_paths(d)} {servers} }}"""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)
    p = start(["nginx", "-p", d, "-c", f"{d}/nginx.conf"])
    for port in ports:
        wait_port(port)
    return p


def temp_paths(d):
    return " ".join(f"{k}_temp_path {d}/{k};" for k in
                    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])


def node_backend(name, port, script=os.path.join(PEERS, "backend.js")):
    """A Node backend: the SockJS peer of the proxy's tests, or bench/wsecho.js."""
    p = start(["node", script, name, str(port)])
    wait_port(port)
    return p


# ---------------------------------------------------------------- proxies


class Proxy:
    """What the phases use of a running proxy: its port, scheme and process counters."""

    tls = False

    def url(self, path, websocket=False):
        scheme = ("wss" if self.tls else "ws") if websocket else ("https" if self.tls else "http")
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def cpu(self):
        return cpu_seconds(self.p.pid)

    def rss_kib(self):
        return rss_kib(self.p.pid)

    def close(self):
        stop(self.p)

    def rebalanced(self, _backends):
        """WebSockets the proxy closed on purpose to move them onto emptier backends, by backend
        name (HAProxy and nginx do not rebalance)."""
        return {}


class Ours(Proxy):
    name = "meteor-proxy"

    def __init__(self, backends, health="/", tls=False, hostile=False):
        self.port, self.admin, self.tls = free_port(), free_port(), tls
        self.file = f"{WORK}/ours-backends.txt"
        # As in a pod with the operator's default limit (the downward API's value); the other
        # limits are the proxy's defaults.
        # Elsewhere every load generator is one address, 127.0.0.1 (HAProxy and nginx have no
        # per-client cap there either).
        limits = ({"METEOR_PROXY_MEMORY_LIMIT_BYTES": str(MEMORY_LIMIT)} if hostile
                  else {"METEOR_PROXY_MAX_CONNECTIONS_PER_CLIENT": "0"})
        self.set_backends(backends)
        with open(f"{WORK}/cookie.key", "w") as f:
            f.write("benchmark cookie key, 32 bytes..")
        tls_flags = ["--tls-cert", TLS_CERT, "--tls-key", TLS_KEY] if tls else []
        self.p = start(PROXY_CMD + [
            "--threads", "1", "--listen", f"127.0.0.1:{self.port}",
            "--admin-listen", f"127.0.0.1:{self.admin}", "--backends-file", self.file,
            "--cookie-key-file", f"{WORK}/cookie.key", "--health-path", health] + tls_flags,
            # Each rebalancing close is logged with its backend (debug): see `rebalanced`.
            env={**os.environ, "RUST_LOG": "warn,meteor_proxy::rebalance=debug", **limits},
            stderr=open(f"{WORK}/ours.log", "w"))
        wait_port(self.port)
        time.sleep(0.7)  # the backends file is read at start-up

    def set_backends(self, backends):
        with open(self.file + ".new", "w") as f:
            f.write("".join(f"127.0.0.1:{p}\n" for _, p in backends))
        os.replace(self.file + ".new", self.file)

    def add(self, all_backends, name):
        self.set_backends([b for b in all_backends if b[0] in self.live + [name]])
        self.live.append(name)

    def remove(self, all_backends, name):
        self.live.remove(name)
        self.set_backends([b for b in all_backends if b[0] in self.live])

    def rebalanced(self, backends):
        ports = {str(p): name for name, p in backends}
        closed = {}
        with open(f"{WORK}/ours.log") as f:
            for line in f:
                if "WebSocket closed to rebalance" in line:
                    port = re.search(r"backend\S*=\S*127\.0\.0\.1:(\d+)", line).group(1)
                    closed[ports[port]] = closed.get(ports[port], 0) + 1
        return closed


class HAProxy(Proxy):
    name = "haproxy"

    def __init__(self, backends, health="/", spare=(), tls=False, hostile=False):
        self.port, self.tls = free_port(), tls
        # The hostile phase's HAProxy has what ours has by default: a request-head timeout
        # (ours: --header-timeout 10s) and a per-source connection cap (a stick table).
        guard = f"""  timeout http-request 10s
  stick-table type ip size 100k expire 30s store conn_cur
  tcp-request connection track-sc0 src
  tcp-request connection reject if {{ sc0_conn_cur gt {PER_CLIENT} }}
""" if hostile else ""
        self.sock = f"{WORK}/haproxy.sock"
        servers = "\n".join(f"  server {n} 127.0.0.1:{p} cookie {n}" for n, p in backends)
        servers += "".join(f"\n  server {n} 127.0.0.1:{p} cookie {n} disabled" for n, p in spare)
        bind = f"127.0.0.1:{self.port}"
        if tls:  # HAProxy wants the certificate and its key in one PEM
            with open(f"{WORK}/haproxy.pem", "w") as out:
                out.write("".join(open(f).read() for f in (TLS_CERT, TLS_KEY)))
            bind += f" ssl crt {WORK}/haproxy.pem"
        conf = f"""global
  nbthread 1
  maxconn 9950
  stats socket {self.sock} mode 600 level admin
defaults
  mode http
  option redispatch
  retries 3
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  timeout tunnel 3600s
  timeout check 1000ms
frontend fe
  bind {bind}
  maxconn 9950
  option forwardfor
{guard}  default_backend app
backend app
  balance leastconn
  cookie meteor-sticky insert indirect nocache
  option httpchk GET {health}
  default-server check inter 750 rise 2 fall 2 maxconn 9950
{servers}
"""
        with open(f"{WORK}/haproxy.cfg", "w") as f:
            f.write(conf)
        self.p = start(["haproxy", "-f", f"{WORK}/haproxy.cfg", "-db"])
        wait_port(self.port)
        time.sleep(0.3)

    def command(self, text):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(text.encode() + b"\n")
            return s.recv(4096).decode()

    def add(self, _all, name):
        self.command(f"set server app/{name} state ready")

    def remove(self, _all, name):
        self.command(f"set server app/{name} state drain")


class Nginx(Proxy):
    name = "nginx"

    def __init__(self, backends, health="/", tls=False):
        self.port, self.tls = free_port(), tls
        self.dir = f"{WORK}/nginx-proxy"
        os.makedirs(self.dir, exist_ok=True)
        self.write(backends)
        self.p = start(["nginx", "-p", self.dir, "-c", f"{self.dir}/nginx.conf"])
        wait_port(self.port)

    def write(self, backends):
        d = self.dir
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=2 fail_timeout=2s;" for _, p in backends)
        listen = f"127.0.0.1:{self.port}"
        if self.tls:
            listen += f" ssl; ssl_certificate {TLS_CERT}; ssl_certificate_key {TLS_KEY}"
        conf = f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
worker_rlimit_nofile 20000;
events {{ worker_connections 19900; }}
http {{
  access_log off; {temp_paths(d)}
  map $cookie_meteor_sticky $sticky_key {{ "" $request_id; default $cookie_meteor_sticky; }}
  map $cookie_meteor_sticky $set_sticky {{ "" "meteor_sticky=$request_id; Path=/; HttpOnly"; default ""; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
  upstream app {{
    hash $sticky_key consistent;
{servers}
    keepalive 128;
  }}
  server {{
    listen {listen};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      add_header Set-Cookie $set_sticky;
    }}
  }}
}}"""
        with open(f"{d}/nginx.conf", "w") as f:
            f.write(conf)
        self.backends = list(backends)

    def reload(self):
        self.p.send_signal(signal.SIGHUP)

    def add(self, all_backends, name):
        self.write(self.backends + [b for b in all_backends if b[0] == name])
        self.reload()

    def remove(self, _all, name):
        self.write([b for b in self.backends if b[0] != name])
        self.reload()

    def close(self):
        stop(self.p, signal.SIGQUIT)


PROXIES = (Ours, HAProxy, Nginx)


# ---------------------------------------------------------------- phase get: small GET


def wrk(url, cookie=None):
    """Max requests/s: one wrk thread, 64 connections, WRK_SECONDS."""
    headers = ["-H", f"Cookie: {cookie}"] if cookie else []
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{WRK_SECONDS}s", *headers, url],
                         capture_output=True, text=True, timeout=WRK_SECONDS + 30).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return dict(requests=int(re.search(r"(\d+) requests in", out).group(1)),
                rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                errors=(int(bad.group(1)) if bad else 0)
                + (sum(int(x) for x in re.findall(r"\d+", socket_errors.group(1))) if socket_errors else 0))


def oha(url, rate):
    """p50/p99 at a fixed rate (32 connections, latency corrected), LATENCY_SECONDS[rate]."""
    seconds = LATENCY_SECONDS[rate]
    out = subprocess.run(["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
                          "-q", str(rate), "--latency-correction", "-c", "32", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    data = json.loads(out)
    pct = data["latencyPercentiles"]
    return dict(p50_ms=pct["p50"] * 1000, p99_ms=pct["p99"] * 1000,
                requests=sum(data["statusCodeDistribution"].values()),
                errors=sum(data.get("errorDistribution", {}).values())
                + sum(n for code, n in data["statusCodeDistribution"].items() if code != "200"))


def get_response(url, cookie=None):
    """One GET; returns the response's Set-Cookie headers."""
    host, port = url.split("/")[2].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
        r = conn.getresponse()
        r.read()
        return r.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


def sticky_cookie(url):
    """The sticky cookie the proxy sets (`name=value`), checked to be accepted when sent back."""
    cookie = next(c.split(";")[0] for c in get_response(url)
                  if c.split("=")[0].strip() in COOKIE_NAMES)
    again = get_response(url, cookie)
    if any(c.split("=")[0].strip() in COOKIE_NAMES for c in again):
        raise RuntimeError(f"{url}: the sticky cookie {cookie} is not accepted: {again}")
    return cookie


def phase_small_get(results):
    """All targets run side by side (idle when not measured); each round runs every job (wrk
    without and with the cookie, oha at each rate, for every target) in a random order."""
    ports = [free_port(), free_port()]
    backends = [("b1", ports[0]), ("b2", ports[1])]
    static = nginx_static_backends(ports)
    proxies = {}
    try:
        urls = {"direct": f"http://127.0.0.1:{ports[0]}/"}
        for cls in PROXIES:
            proxies[cls.name] = cls(backends)
            urls[cls.name] = proxies[cls.name].url("/")
        for url in urls.values():
            subprocess.run(["oha", "--no-tui", "--output-format", "quiet", "-n", "2000", url],
                           timeout=30, capture_output=True)
        cookies = {name: sticky_cookie(urls[name]) for name in proxies}
        jobs = [(name, "get") for name in urls] + [(name, "cookie") for name in proxies]
        jobs += [(name, rate) for name in urls for rate in LATENCY_SECONDS]
        runs = {job: [] for job in jobs}
        for round_ in range(ROUNDS):
            random.shuffle(jobs)
            for name, kind in jobs:
                window = Window(proxies.get(name))
                if kind in ("get", "cookie"):
                    run = wrk(urls[name], cookies.get(name) if kind == "cookie" else None)
                else:
                    run = oha(urls[name], kind)
                run.update(window.close(run["requests"]))
                runs[(name, kind)].append(run)
                log(f"[small GET] round {round_ + 1} {name} {kind}: {run}")
        for (name, kind), values in runs.items():
            summary = {k: median([v[k] for v in values]) for k in values[0] if k != "requests"}
            summary.update(requests=min(v["requests"] for v in values),
                           errors=sum(v["errors"] for v in values), runs=values)
            if kind == "cookie":
                summary["cookie"] = cookies[name]
            key = kind if kind in ("get", "cookie") else f"at {kind}"
            results.setdefault(name, {})[key] = summary
    finally:
        for proxy in proxies.values():
            proxy.close()
        stop(static)


# ---------------------------------------------------------------- phase msg: WebSocket messages


def read_json(p, timeout):
    """The next JSON line of a load generator, within `timeout` seconds."""
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box or not box[0]:
        raise RuntimeError("no output from the load generator")
    return json.loads(box[0])


def tell(p, line="go"):
    p.stdin.write(line + "\n")
    p.stdin.flush()


def ws_load(url, count, concurrency, message_seconds=0):
    args = [str(count), str(concurrency)] + ([str(message_seconds)] if message_seconds else [])
    return start(["node", WSLOAD, url, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 text=True)


def messages_run(proxy):
    """MSG_SOCKETS WebSockets through `proxy`, each echoing DDP-sized messages for MSG_SECONDS."""
    load = ws_load(proxy.url("/websocket", websocket=True), MSG_SOCKETS, 200, MSG_SECONDS)
    try:
        opened = read_json(load, 60)
        window = Window(proxy)
        tell(load)
        exchanged = read_json(load, MSG_SECONDS + 30)
        run = dict(opened=opened["opened"], failed=opened["failed"], messages=exchanged["messages"],
                   rate=exchanged["messages"] / exchanged["seconds"])
        run.update(window.close(exchanged["messages"]))
        tell(load)
        read_json(load, 30)
        return run
    finally:
        stop(load)


def phase_messages(results):
    backends = [("b1", free_port()), ("b2", free_port())]
    echo = os.path.join(ROOT, "bench/wsecho.js")
    nodes = [node_backend(n, p, echo) for n, p in backends]
    proxies = []
    try:
        proxies = [cls(backends, health="/peer/health") for cls in PROXIES]
        time.sleep(1.0)  # two health checks bring the backends up
        runs = {proxy.name: [] for proxy in proxies}
        for round_ in range(ROUNDS):
            random.shuffle(proxies)
            for proxy in proxies:
                runs[proxy.name].append(messages_run(proxy))
                log(f"[messages] round {round_ + 1} {proxy.name}: {runs[proxy.name][-1]}")
        for name, values in runs.items():
            summary = {k: median([v[k] for v in values]) for k in values[0]}
            summary.update(failed=max(v["failed"] for v in values), runs=values)
            results.setdefault(name, {})["msg"] = summary
    finally:
        for proxy in proxies:
            proxy.close()
        for n in nodes:
            stop(n)


# ---------------------------------------------------------------- phase ws: idle WebSockets


def ws_count():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # A proxy holds two sockets per tunneled WebSocket; stay under the per-process limit.
    return min(10000, (min(soft, hard) - 150) // 2)


def idle_run(cls, count, tls):
    """`count` WebSockets opened through a fresh `cls` (200 handshakes in flight), left idle
    WS_IDLE_SECONDS, then counted; proxy memory per connection from its RSS before and after."""
    backends = [("b1", free_port()), ("b2", free_port())]
    nodes = [node_backend(n, p) for n, p in backends]
    proxy = cls(backends, health="/peer/health", tls=tls)
    load = None
    try:
        time.sleep(1.0)
        before = proxy.rss_kib()
        load = ws_load(proxy.url("/sockjs/websocket", websocket=True), count, 200)
        opened = read_json(load, max(180, count / 20))  # a loaded machine opens 20/s at worst
        time.sleep(WS_IDLE_SECONDS)
        after = proxy.rss_kib()
        tell(load)
        final = read_json(load, 30)
        return dict(opened=opened["opened"], failed=opened["failed"],
                    rate=opened["opened"] / opened["seconds"],
                    per_conn=(after - before) * 1024 / max(opened["opened"], 1),
                    dropped=opened["opened"] - final["open"], rss_kib=after)
    finally:
        if load:
            stop(load)
        proxy.close()
        for n in nodes:
            stop(n)


def phase_websockets(results):
    for tls, count in ((False, ws_count()), (True, min(ws_count(), WS_TLS_COUNT))):
        key = "ws tls" if tls else "ws"
        order = list(PROXIES)
        random.shuffle(order)
        for cls in order:
            results.setdefault(cls.name, {})[key] = run = idle_run(cls, count, tls)
            log(f"[idle websockets{' tls' if tls else ''}] {cls.name}: {run}")


# ---------------------------------------------------------------- phase churn


class Session(threading.Thread):
    """A SockJS xhr-polling client that keeps cookies like a browser."""

    def __init__(self, port, stats, state, cookie_names):
        super().__init__(daemon=True)
        self.port, self.stats, self.state = port, stats, state
        self.cookie_names = cookie_names
        self.jar = {}

    def request(self, conn, path, body=""):
        headers = {"Content-Type": "text/plain"}
        if self.jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read().decode(errors="replace")
        for value in r.headers.get_all("Set-Cookie") or []:
            k, _, v = value.split(";")[0].partition("=")
            if k.strip() in self.cookie_names:
                self.jar[k.strip()] = v.strip()
        return r.status, r.headers.get("X-Backend"), data

    def run(self):
        st, state = self.stats, self.state
        lost_at = None
        while not state["stop"]:
            owner = None
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            sid = "".join(random.choices(string.ascii_lowercase, k=12))
            base = f"/sockjs/{random.randint(100, 999)}/{sid}"
            try:
                status, owner, body = self.request(conn, base + "/xhr")
                if status != 200 or not body.startswith("o"):
                    raise OSError(f"open {status}")
                if lost_at is not None:
                    st["failover"].append(time.time() - lost_at)
                    lost_at = None
                st["sessions"] += 1
                n = 0
                while not state["stop"]:
                    n += 1
                    s1, b1, _ = self.request(conn, base + "/xhr_send", f'["m{n}"]')
                    s2, b2, d2 = self.request(conn, base + "/xhr")
                    st["requests"] += 2
                    alive = owner not in state["killed"]
                    if b1 != owner or b2 != owner or s1 == 404 or s2 == 404:
                        if alive:
                            st["violations"] += 1
                            raise SessionLost()
                        raise OSError("session lost with its backend")
                    if s1 != 204 or s2 != 200:
                        raise OSError(f"status {s1}/{s2}")
                    time.sleep(0.05)
            except SessionLost:
                pass  # counted as a violation; start a new session
            except (OSError, http.client.HTTPException):
                if state["stop"]:
                    break
                if owner is not None and owner in state["killed"]:
                    lost_at = lost_at or state["kill_time"]  # expected: measure the failover
                elif lost_at is None:
                    st["errors"] += 1
                time.sleep(0.05)
            finally:
                conn.close()


class SessionLost(Exception):
    """A live session's request reached another backend (a stickiness violation)."""


def phase_churn(results):
    all_backends = [("b1", free_port()), ("b2", free_port()), ("b3", free_port())]
    order = list(PROXIES)
    random.shuffle(order)
    for cls in order:
        nodes = {n: node_backend(n, p) for n, p in all_backends}
        initial = all_backends[:2]
        if cls is HAProxy:
            proxy = cls(initial, health="/peer/health", spare=all_backends[2:])
        else:
            proxy = cls(initial, health="/peer/health")
        proxy.live = ["b1", "b2"]
        stats = dict(sessions=0, requests=0, violations=0, errors=0, failover=[])
        state = dict(stop=False, killed=set(), kill_time=None)
        load = None
        try:
            load = ws_load(proxy.url("/sockjs/websocket", websocket=True), 200, 50)
            read_json(load, 60)
            sessions = [Session(proxy.port, stats, state, COOKIE_NAMES) for _ in range(30)]
            for s in sessions:
                s.start()
            time.sleep(CHURN_STEP)
            proxy.add(all_backends, "b3")
            time.sleep(CHURN_STEP)
            proxy.remove(all_backends, "b2")
            time.sleep(CHURN_STEP)
            state["killed"].add("b1")
            state["kill_time"] = time.time()
            stop(nodes["b1"], signal.SIGKILL)
            time.sleep(2 * CHURN_STEP)
            state["stop"] = True
            for s in sessions:
                s.join(15)
            rebalanced = proxy.rebalanced(all_backends)
            tell(load)
            final = read_json(load, 30)
            closed = final["closedByBackend"]
            log(f"[churn] {cls.name}: WebSockets closed {closed}, rebalancing closes {rebalanced}")
            # Closes the proxy did not make on purpose to rebalance: on b2 as it drained, on
            # the backends that stayed (b3) as drops. b1 was killed.
            unplanned = {k: n - rebalanced.get(k, 0) for k, n in closed.items()}
            ws_drained = unplanned.get("b2", 0)
            ws_dropped = sum(n for k, n in unplanned.items() if k not in ("b1", "b2"))
            failover = max(stats["failover"]) if stats["failover"] else None
            results.setdefault(cls.name, {})["churn"] = dict(
                sessions=stats["sessions"], requests=stats["requests"],
                violations=stats["violations"], errors=stats["errors"],
                failover=failover, ws_dropped=ws_dropped, ws_drained=ws_drained,
                rebalanced=sum(rebalanced.values()) if cls is Ours else None)
            log(f"[churn] {cls.name}: {results[cls.name]['churn']}")
        finally:
            state["stop"] = True
            if load:
                stop(load)
            proxy.close()
            for p in nodes.values():
                stop(p)


# ---------------------------------------------------------------- phase hostile: hostile clients

# The proxy container's default memory limit (the operator's): ours derives its connection cap
# from it as in a pod (METEOR_PROXY_MEMORY_LIMIT_BYTES from the downward API).
MEMORY_LIMIT = 256 * 1024 * 1024
# --max-connections-per-client's default; HAProxy gets the same per-source cap (stick table).
PER_CLIENT = 256
HOSTILE_SECONDS = 6 if QUICK else 15
# Hostile clients come from 127.0.1.x (one address or many), the well-behaved one from
# 127.0.0.2: the proxies tell clients apart by address, as on the Internet.
GOOD_SOURCE = "127.0.0.2"
BIG_BODY = 8 * 1024 * 1024  # /big on the static backends, for slow readers
# Kernel memory of a TCP socket besides its queues (slab objects: TCP 2368, sock_inode 832,
# filp 192, dentry 192, eventpoll 128 bytes on this kernel, /proc/slabinfo).
SOCKET_STRUCT = 3712
# Connections the hostile clients open per second at most (a bound for the shared machine).
OPEN_RATE = 2000
# Idle WebSockets for their memory per connection (fewer give noisier figures).
WS_COST_N = 5000


def hostile_source(i):
    return f"127.0.1.{1 + i % 250}"


def socket_memory(pid):
    """Kernel memory of the process tree's TCP sockets (bytes): their queues (`ss -tm` skmem
    r + w + f: received, queued to send, reserved) and SOCKET_STRUCT per socket; and how many
    of them are connected to hostile addresses (127.0.1.x)."""
    pids = {str(p) for p in process_tree(pid)}
    out = subprocess.run(["ss", "-tanmpH"], capture_output=True, text=True, timeout=60).stdout
    queues = sockets = hostile = 0
    mine = False
    for line in out.splitlines():
        if not line[:1].isspace():
            mine = any(f"pid={p}," in line for p in pids)
            if mine:
                sockets += 1
                fields = line.split()
                hostile += fields[0] == "ESTAB" and fields[4].startswith("127.0.1.")
        if mine and "skmem:(" in line:
            mem = dict(re.findall(r"([a-z]+)(\d+)", line.split("skmem:(")[1].split(")")[0]))
            queues += int(mem.get("r", 0)) + int(mem.get("w", 0)) + int(mem.get("f", 0))
    return dict(queues=queues, sockets=sockets, hostile=hostile,
                total=queues + sockets * SOCKET_STRUCT)


class Crowd(threading.Thread):
    """Hostile connections: up to `per_source` from each of `sources` addresses, each sending
    `opening` once connected and then `trickle` every TRICKLE seconds; a connection the proxy
    closes is opened again (at most OPEN_RATE a second). `read`: read what the proxy sends
    (False: a slow reader, with a 4 KiB receive buffer, that never reads)."""

    TRICKLE = 2.0

    def __init__(self, port, sources, per_source, opening=b"", trickle=b"", read=True):
        super().__init__(daemon=True)
        self.addr = ("127.0.0.1", port)
        self.sources, self.per_source = sources, per_source
        self.opening, self.trickle, self.read = opening, trickle, read
        self.stop = threading.Event()
        self.stats = dict(opened=0, closed_by_proxy=0, failed=0, answers={})

    def open_one(self, sel, source):
        s = socket.socket()
        s.setblocking(False)
        if not self.read:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            s.bind((source, 0))
            s.connect_ex(self.addr)
        except OSError:
            s.close()
            self.stats["failed"] += 1
            return
        sel.register(s, selectors.EVENT_WRITE, dict(source=source, sent=0, last=time.time()))

    def run(self):
        sel = selectors.DefaultSelector()
        silent = []  # slow readers, once their request is out: watched no more
        trickled = time.time()
        want = {hostile_source(i): self.per_source for i in range(self.sources)}
        have = {src: 0 for src in want}
        budget, tick = 0.0, time.time()
        try:
            while not self.stop.is_set():
                now = time.time()
                budget = min(OPEN_RATE, budget + (now - tick) * OPEN_RATE)
                tick = now
                for src in want:
                    while have[src] < want[src] and budget >= 1:
                        self.open_one(sel, src)
                        have[src] += 1
                        budget -= 1
                for key, events in sel.select(timeout=0.05):
                    s, st = key.fileobj, key.data
                    closed = False
                    try:
                        if events & selectors.EVENT_WRITE:
                            if st["sent"] == 0 and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                                raise OSError("connect failed")
                            if st["sent"] < len(self.opening):
                                st["sent"] += s.send(self.opening[st["sent"]:])
                            else:
                                st["sent"] = max(st["sent"], 1)
                            if st["sent"] >= len(self.opening):
                                if st.get("counted") is None:
                                    st["counted"] = True
                                    self.stats["opened"] += 1
                                if self.read:
                                    sel.modify(s, selectors.EVENT_READ, st)
                                else:
                                    sel.unregister(s)
                                    silent.append(s)
                        elif events & selectors.EVENT_READ:
                            data = s.recv(65536)
                            if not data:
                                closed = True
                            elif data.startswith(b"HTTP/1."):
                                code = data[9:12].decode(errors="replace")
                                self.stats["answers"][code] = self.stats["answers"].get(code, 0) + 1
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        closed = True
                    if closed:
                        if st.get("counted"):
                            self.stats["closed_by_proxy"] += 1
                        else:
                            self.stats["failed"] += 1
                        sel.unregister(s)
                        s.close()
                        have[st["source"]] -= 1
                if self.trickle and now - trickled >= 0.5:
                    trickled = now
                    for key in list(sel.get_map().values()):
                        st = key.data
                        if st.get("counted") and now - st["last"] >= self.TRICKLE:
                            st["last"] = now
                            try:
                                key.fileobj.send(self.trickle)
                            except OSError:
                                pass
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            for s in silent:
                s.close()
            sel.close()


class Oversized(threading.Thread):
    """One address sending request heads over every proxy's limit (64 KiB), one connection
    each, as fast as it is answered."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.stats = dict(sent=0, answers={}, closed_unanswered=0)

    def run(self):
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
        while not self.stop.is_set():
            try:
                s = socket.socket()
                s.settimeout(5)
                s.bind((hostile_source(0), 0))
                s.connect(("127.0.0.1", self.port))
                try:
                    s.sendall(head)
                except OSError:
                    pass  # answered and closed before the whole head was sent
                self.stats["sent"] += 1
                answer = s.recv(64)
                code = answer[9:12].decode(errors="replace") if answer.startswith(b"HTTP/1.") else None
                if code:
                    self.stats["answers"][code] = self.stats["answers"].get(code, 0) + 1
                else:
                    self.stats["closed_unanswered"] += 1
            except OSError:
                self.stats["closed_unanswered"] += 1
            finally:
                s.close()


class WellBehaved(threading.Thread):
    """The client the proxy must keep serving, from 127.0.0.2: a GET every 100 ms on a keep-alive
    connection opened before the attack (a user already there), and one every 100 ms on a new
    connection (a user arriving), each given 5 s."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.stats = dict(kept_ok=0, kept_failed=0, new_ok=0, new_failed=0, new_ms=[])
        self.kept = self.connect()
        self.get(self.kept)

    def connect(self):
        s = socket.socket()
        s.settimeout(5)
        s.bind((GOOD_SOURCE, 0))
        s.connect(("127.0.0.1", self.port))
        return s

    @staticmethod
    def get(s):
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += s.recv(4096)
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError(head[:12])

    def run(self):
        while not self.stop.wait(0.1):
            try:
                self.get(self.kept)
                self.stats["kept_ok"] += 1
            except OSError:
                self.stats["kept_failed"] += 1
                try:
                    self.kept = self.connect()
                except OSError:
                    pass
            began = time.time()
            try:
                s = self.connect()
                try:
                    self.get(s)
                finally:
                    s.close()
                self.stats["new_ok"] += 1
                self.stats["new_ms"].append((time.time() - began) * 1000)
            except OSError:
                self.stats["new_failed"] += 1


def hostile_proxy(cls, backends):
    proxy = cls(backends, hostile=True)
    time.sleep(1.0)  # two health checks
    return proxy


def attack_run(cls, backends, name, make_attack):
    """A fresh `cls` under one attack for HOSTILE_SECONDS beside a well-behaved client: peak
    proxy memory (RSS and kernel socket memory), CPU, what the attackers held, what the
    well-behaved client got."""
    proxy = hostile_proxy(cls, backends)
    good = attack = None
    try:
        good = WellBehaved(proxy.port)
        base_rss, base_kernel = proxy.rss_kib() * 1024, socket_memory(proxy.p.pid)["total"]
        cpu0 = proxy.cpu()
        attack = make_attack(proxy.port)
        attack.start()
        good.start()
        peak = dict(rss=0, kernel=0, total=0, held=0)
        deadline = time.time() + HOSTILE_SECONDS
        while time.time() < deadline:
            rss = proxy.rss_kib() * 1024
            sockets = socket_memory(proxy.p.pid)
            peak["rss"] = max(peak["rss"], rss)
            peak["kernel"] = max(peak["kernel"], sockets["total"])
            peak["total"] = max(peak["total"], rss + sockets["total"])
            peak["held"] = max(peak["held"], sockets["hostile"])
            time.sleep(0.5)
        (u0, s0), (u1, s1) = cpu0, proxy.cpu()
        attack.stop.set()
        good.stop.set()
        attack.join(30)
        good.join(30)
        g = good.stats
        run = dict(
            peak_rss_mib=peak["rss"] / 2**20, peak_kernel_mib=peak["kernel"] / 2**20,
            peak_total_mib=peak["total"] / 2**20, base_mib=(base_rss + base_kernel) / 2**20,
            held=peak["held"], cpu_pct=100 * (u1 - u0 + s1 - s0) / HOSTILE_SECONDS,
            attack=attack.stats, kept_ok=g["kept_ok"], kept_failed=g["kept_failed"],
            new_ok=g["new_ok"], new_failed=g["new_failed"],
            new_p50_ms=median(g["new_ms"]) if g["new_ms"] else None,
            new_p99_ms=sorted(g["new_ms"])[int(len(g["new_ms"]) * 0.99)] if g["new_ms"] else None,
            alive=proxy.p.poll() is None)
        if cls is Ours:
            text = http.client.HTTPConnection("127.0.0.1", proxy.admin, timeout=5)
            text.request("GET", "/metrics")
            metrics = text.getresponse().read().decode()
            run["refused"] = {m.group(1): int(m.group(2)) for m in re.finditer(
                r'meteor_proxy_connections_refused_total\{reason="(\w+)"\} (\d+)', metrics)}
        log(f"[hostile] {cls.name} {name}: {run}")
        return run
    finally:
        for t in (attack, good):
            if t:
                t.stop.set()
        proxy.close()


ATTACKS = {
    # Slowloris from many addresses: 8 KiB of a head, then a byte every 2 s, never finished.
    "slowloris": lambda port: Crowd(port, 40, 250, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8192,
                                    trickle=b"a"),
    # Slow readers from many addresses: an 8 MiB response each, never read.
    "slow readers": lambda port: Crowd(port, 20, 150, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
                                       read=False),
    # Heads over every limit (64 KiB), one connection after another from one address.
    "oversized heads": Oversized,
    # One address opening as many idle connections as it can.
    "one-address flood": lambda port: Crowd(port, 1, 10000),
}


def connection_costs(cls, backends, ws_backends):
    """Memory per connection in each state (bytes: the proxy's RSS and its sockets' kernel
    memory, before and after N connections in that state, on a fresh proxy)."""
    states = {
        "idle connection": (2000, b"", True),
        "slow head, 200 B": (2000, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 160, True),
        "slow head, 15.5 KiB": (2000, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (15 * 1024 + 480), True),
        "idle keep-alive": (2000, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        "slow reader (8 MiB response, 4 KiB client window)": (500, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n", False),
    }
    costs = {}
    for state, (n, opening, read) in states.items():
        proxy = hostile_proxy(cls, backends)
        crowd = None
        try:
            rss0, k0 = proxy.rss_kib() * 1024, socket_memory(proxy.p.pid)
            crowd = Crowd(proxy.port, 20, n // 20, opening, read=read)
            crowd.start()
            time.sleep(n / OPEN_RATE + 3)
            rss1, k1 = proxy.rss_kib() * 1024, socket_memory(proxy.p.pid)
            held = max(k1["hostile"], 1)
            costs[state] = dict(n=n, held=k1["hostile"], user=(rss1 - rss0) / held,
                                kernel=(k1["total"] - k0["total"]) / held)
            log(f"[hostile cost] {cls.name} {state}: {costs[state]}")
        finally:
            if crowd:
                crowd.stop.set()
                crowd.join(30)
            proxy.close()
    # Idle WebSockets through SockJS backends (as the ws phase, with the kernel's part; the
    # load generator is one address, so without the per-client caps).
    proxy = cls(ws_backends, health="/peer/health")
    load = None
    try:
        time.sleep(1.0)
        rss0, k0 = proxy.rss_kib() * 1024, socket_memory(proxy.p.pid)
        load = ws_load(proxy.url("/sockjs/websocket", websocket=True), WS_COST_N, 200)
        opened = read_json(load, 300)["opened"]
        time.sleep(2)
        rss1, k1 = proxy.rss_kib() * 1024, socket_memory(proxy.p.pid)
        costs["idle WebSocket"] = dict(n=WS_COST_N, held=opened, user=(rss1 - rss0) / max(opened, 1),
                                       kernel=(k1["total"] - k0["total"]) / max(opened, 1))
        log(f"[hostile cost] {cls.name} idle WebSocket: {costs['idle WebSocket']}")
    finally:
        if load:
            stop(load)
        proxy.close()
    return costs


def phase_hostile(results):
    """Hostile clients against ours and HAProxy (a fresh proxy per attack, in random order),
    with a well-behaved client beside them; and memory per connection in each state."""
    ports = [free_port(), free_port()]
    backends = [("b1", ports[0]), ("b2", ports[1])]
    static = nginx_static_backends(ports)
    ws_backends = [("w1", free_port()), ("w2", free_port())]
    nodes = [node_backend(n, p) for n, p in ws_backends]
    try:
        order = [Ours, HAProxy]
        random.shuffle(order)
        for cls in order:
            out = results.setdefault(cls.name, {}).setdefault("hostile", {})
            out["cost"] = connection_costs(cls, backends, ws_backends)
            for name, make in ATTACKS.items():
                out[name] = attack_run(cls, backends, name, make)
    finally:
        stop(static)
        for n in nodes:
            stop(n)


def hostile_rows(results):
    """The hostile phase's rows: ours beside HAProxy."""
    ours, ha = (results.get(n, {}).get("hostile") for n in ("meteor-proxy", "haproxy"))
    if not ours and not ha:
        return []
    rows = ["", f"Hostile clients ({HOSTILE_SECONDS} s each, a fresh proxy per attack; ours with "
            f"METEOR_PROXY_MEMORY_LIMIT_BYTES={MEMORY_LIMIT} and its defaults, HAProxy with "
            f"maxconn 9950, timeout http-request 10s and a per-source cap of {PER_CLIENT}; "
            "memory = RSS + the kernel's memory of the proxy's sockets):", "",
            "| metric | meteor-proxy | HAProxy | ours / HAProxy |", "| --- | ---: | ---: | ---: |"]

    def cell(v, fmt):
        return "–" if v is None else fmt.format(v) if isinstance(v, (int, float)) else str(v)

    def row(label, get, fmt="{:.0f}", ratio=True):
        a, b = (get(x) if x else None for x in (ours, ha))
        r = f"{a / b:.2f}" if ratio and isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 and a >= 0 else ""
        rows.append(f"| {label} | {cell(a, fmt)} | {cell(b, fmt)} | {r} |")

    for state in (ours or ha)["cost"]:
        row(f"memory per {state} (bytes: proxy + kernel)",
            lambda x, s=state: x["cost"][s]["user"] + x["cost"][s]["kernel"])
        row(f"  of which the kernel's (socket structures and queues)",
            lambda x, s=state: x["cost"][s]["kernel"])
    for name in ATTACKS:
        row(f"{name}: peak memory MiB (RSS + sockets; limit {MEMORY_LIMIT >> 20})",
            lambda x, n=name: x[n]["peak_total_mib"], "{:.1f}")
        row(f"{name}: hostile connections held (peak)", lambda x, n=name: x[n]["held"], ratio=False)
        row(f"{name}: proxy CPU % of one core", lambda x, n=name: x[n]["cpu_pct"], "{:.0f}")
        row(f"{name}: well-behaved keep-alive GETs served / failed",
            lambda x, n=name: f"{x[n]['kept_ok']} / {x[n]['kept_failed']}", ratio=False)
        row(f"{name}: well-behaved new-connection GETs served / failed",
            lambda x, n=name: f"{x[n]['new_ok']} / {x[n]['new_failed']}", ratio=False)
        row(f"{name}: new-connection GET p99 ms", lambda x, n=name: x[n]["new_p99_ms"], "{:.1f}")
        row(f"{name}: proxy alive at the end", lambda x, n=name: "yes" if x[n]["alive"] else "NO",
            ratio=False)
    if ours:
        for name in ATTACKS:
            refused = ours[name].get("refused") or {}
            rows.append(f"| {name}: ours' refusals by cap | "
                        f"{', '.join(f'{k} {v}' for k, v in sorted(refused.items())) or '0'} | – | |")
    return rows


# ---------------------------------------------------------------- report

NAMES = ("direct", "meteor-proxy", "haproxy", "nginx")


def table(results, ws_n, versions):
    """Every phase that ran, side by side: one row per figure, ratios of ours to the others."""
    rows = [f"| metric | direct | meteor-proxy | HAProxy {versions['haproxy']} | "
            f"nginx {versions['nginx']} | ours / HAProxy | ours / nginx |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def value(name, path):
        v = results.get(name, {})
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        return v

    def positive(v):  # a ratio of negative or missing figures means nothing
        return isinstance(v, (int, float)) and v > 0

    def row(label, path, fmt="{:.0f}", ratios=True, names=NAMES):
        values = {n: value(n, path) if n in names else None for n in NAMES}
        if all(v is None for v in values.values()):
            return
        cells = [fmt.format(v) if isinstance(v, (int, float)) else ("–" if v is None else str(v))
                 for v in values.values()]
        ours = values["meteor-proxy"]
        ratio = [f"{ours / values[o]:.2f}" if ratios and positive(ours) and positive(values[o]) else ""
                 for o in ("haproxy", "nginx")]
        rows.append(f"| {label} | " + " | ".join(cells + ratio) + " |")

    proxies = NAMES[1:]
    wrk_label = f"wrk -t1 -c64 -d{WRK_SECONDS}s, median of {ROUNDS}"
    unit = f"{PERF_EVENT} per request"
    row(f"small GET: max req/s ({wrk_label})", ["get", "rps"])
    row("small GET: proxy CPU µs per request (same runs; lower is better)", ["get", "cpu_us"], "{:.2f}")
    row("small GET: of which user space (the rest is the kernel's TCP work)", ["get", "user_us"], "{:.2f}")
    row(f"small GET: {unit} (perf stat)", ["get", "perf"], "{:.0f}")
    row(f"small GET with the sticky cookie: max req/s ({wrk_label})", ["cookie", "rps"], names=proxies)
    row("small GET with the sticky cookie: proxy CPU µs per request", ["cookie", "cpu_us"], "{:.2f}",
        names=proxies)
    row("small GET with the sticky cookie: of which user space", ["cookie", "user_us"], "{:.2f}",
        names=proxies)
    row(f"small GET with the sticky cookie: {unit} (perf stat)", ["cookie", "perf"], "{:.0f}")
    row("small GET: non-2xx answers and socket errors (wrk, all runs)",
        ["get", "errors"], ratios=False)
    row("small GET with the sticky cookie: non-2xx answers and socket errors (wrk, all runs)",
        ["cookie", "errors"], ratios=False, names=proxies)
    for rate, seconds in LATENCY_SECONDS.items():
        key = f"at {rate}"
        counts = [value(n, [key, "requests"]) for n in NAMES if value(n, [key, "requests"])]
        if not counts:
            continue
        oha_label = f"oha -q {rate} -c32 -z{seconds}s, median of {ROUNDS}"
        row(f"p50 ms at {rate} req/s ({oha_label})", [key, "p50_ms"], "{:.3f}")
        row(f"p99 ms at {rate} req/s (≥ {min(counts) // 100} samples above each p99)", [key, "p99_ms"], "{:.3f}")
        direct = value("direct", [key, "p99_ms"])
        for n in proxies:
            p99 = value(n, [key, "p99_ms"])
            if p99 is not None and direct is not None:
                results[n][key]["added_p99_ms"] = p99 - direct
        row(f"added p99 ms at {rate} req/s (p99 − direct p99)", [key, "added_p99_ms"], "{:.3f}")
        row(f"proxy CPU µs per request at {rate} req/s", [key, "cpu_us"], "{:.2f}")
    msg_label = f"{MSG_SOCKETS} WebSockets, DDP-sized echo ({MSG_SECONDS} s, median of {ROUNDS})"
    row(f"{msg_label}: messages/s", ["msg", "rate"])
    row("WebSocket messages: proxy CPU µs per echoed message (lower is better)", ["msg", "cpu_us"], "{:.2f}")
    row("WebSocket messages: of which user space", ["msg", "user_us"], "{:.2f}")
    row(f"WebSocket messages: {PERF_EVENT} per echoed message (perf stat)", ["msg", "perf"], "{:.0f}")
    row("WebSocket messages: sockets failed to open (worst round)", ["msg", "failed"], ratios=False)
    for key, over, n in (("ws", "", ws_n), ("ws tls", " over TLS", min(ws_n, WS_TLS_COUNT))):
        row(f"{n} idle WebSockets{over}: proxy memory per connection (bytes)", [key, "per_conn"])
        row(f"WebSocket{over} connect rate (/s, 200 in flight)", [key, "rate"])
        row(f"WebSockets{over} failed to open", [key, "failed"], ratios=False)
        row(f"WebSockets{over} dropped while idle {WS_IDLE_SECONDS} s", [key, "dropped"], ratios=False)
    for key, label in (("violations", "churn: sticky violations"), ("errors", "churn: errors on live backends"),
                       ("ws_dropped", "churn: WebSockets dropped on the backend that stayed (b3)"),
                       ("ws_drained", "churn: WebSockets closed as b2 drained (after its removal)"),
                       ("rebalanced", "churn: WebSockets closed to rebalance onto b3 (HAProxy and "
                        "nginx have no rebalancing)"),
                       ("requests", "churn: session requests served")):
        row(label, ["churn", key], ratios=False)
    row("churn: failover time after a backend is killed (s)", ["churn", "failover"], "{:.2f}", ratios=False)
    return "\n".join(rows)


def versions():
    ha = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    ng = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    return dict(haproxy=re.search(r"version (\d+(?:\.\d+)*)", ha).group(1), nginx=ng.strip().split("/")[-1])


PHASES = {"get": phase_small_get, "msg": phase_messages, "ws": phase_websockets, "churn": phase_churn,
          "hostile": phase_hostile}


def chosen_phases(table, names):
    """The phases of `table` named on the command line (all by default); exits on others."""
    phases = names or list(table)
    unknown = [p for p in phases if p not in table]
    if unknown:
        sys.exit(f"unknown phase {unknown}; phases: {' '.join(table)}")
    return phases


def run_phases(table, phases):
    """Runs `phases` of `table` into one results dict, then kills every process still running
    (whatever happened). Returns the results and the seconds it took."""
    results = {}
    began = time.time()
    try:
        for phase in phases:
            table[phase](results)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results, time.time() - began


def main():
    phases = chosen_phases(PHASES, sys.argv[1:])
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    random.seed(SEED)
    results, elapsed = run_phases(PHASES, phases)
    v = versions()
    perf = (f"perf stat -e {PERF_EVENT}: counted" if PERF else
            f"perf stat -e {PERF_EVENT}: <not supported> on this machine, so no perf rows")
    results["run"] = dict(phases=phases, seed=SEED, rounds=ROUNDS, seconds=elapsed, perf=PERF,
                          proxy=PROXY_CMD, versions=v, cores=os.cpu_count())
    with open(f"{WORK}/results.json", "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nphases {' '.join(phases)} in {elapsed / 60:.1f} min (BENCH_SEED={SEED}); "
          f"{os.cpu_count()} cores; one worker thread per proxy; all on 127.0.0.1; "
          f"proxy CPU from /proc/PID/stat; {perf}\n")
    print(table(results, ws_count(), v))
    print("\n".join(hostile_rows(results)))
    print(f"\nraw figures: {WORK}/results.json")


if __name__ == "__main__":
    main()
