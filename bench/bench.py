#!/usr/bin/env python3
"""Benchmark of `meteor-operator proxy` beside HAProxy 2.6 and nginx 1.22 (and no proxy).

Run through bench/run.sh, which installs the tools and builds the proxy. Everything listens on
127.0.0.1, every phase is bounded in time, every process started here is stopped at the end.
Each proxy gets one worker thread and the same backends, configured the way the seeds do it:
sticky cookie, leastconn (nginx: consistent hash of a cookie, its closest open-source match),
WebSocket upgrade and long tunnel timeouts, active health checks (interval 750 ms, rise 2,
fall 2, timeout 1000 ms; nginx OSS has only passive checks).

Phases:
 1. small GET: max requests/s (wrk -t1 -c64), p50/p99 at fixed rates (oha -q, latency corrected),
    interleaved rounds, medians
 2. idle WebSockets: proxy memory per connection, connect rate, drops
 3. stickiness under churn: xhr-polling SockJS sessions with a browser-like cookie jar while a
    backend is added, one removed (drained) and one killed; violations, errors, failover time,
    and WebSockets dropped on backends that stayed alive.
"""

import http.client
import json
import os
import random
import resource
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
PROXY_BIN = os.environ.get("PROXY_BIN", os.path.join(ROOT, "target/release/meteor-operator"))
PEERS = os.path.join(ROOT, "proxy/tests/peers")
QUICK = os.environ.get("BENCH_QUICK") == "1"
WRK_SECONDS = 3 if QUICK else 5
OHA_SECONDS = 3 if QUICK else 4
ROUNDS = 1 if QUICK else 3
RATES = [1000, 4000]
CHURN_STEP = 2.0 if QUICK else 3.0

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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


# ---------------------------------------------------------------- backends


def nginx_static_backends(ports):
    """Fast static backends for the small-GET phase: one nginx, one worker, a server per port."""
    d = f"{WORK}/static"
    os.makedirs(d, exist_ok=True)
    servers = "\n".join(
        f"""server {{ listen 127.0.0.1:{p} reuseport; keepalive_requests 1000000;
              location / {{ add_header X-Backend b{i}; return 200 "b{i}\\n"; }} }}"""
        for i, p in enumerate(ports, 1))
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


def node_backend(name, port):
    p = start(["node", os.path.join(PEERS, "backend.js"), name, str(port)])
    wait_port(port)
    return p


# ---------------------------------------------------------------- proxies


class Ours:
    name = "meteor-proxy"

    def __init__(self, backends, health="/"):
        self.port, self.admin = free_port(), free_port()
        self.file = f"{WORK}/ours-backends.txt"
        self.set_backends(backends)
        with open(f"{WORK}/cookie.key", "w") as f:
            f.write("benchmark cookie key, 32 bytes..")
        self.p = start([PROXY_BIN, "proxy", "--threads", "1", "--listen", f"127.0.0.1:{self.port}",
                        "--admin-listen", f"127.0.0.1:{self.admin}", "--backends-file", self.file,
                        "--cookie-key-file", f"{WORK}/cookie.key", "--health-path", health],
                       env={**os.environ, "RUST_LOG": "warn"})
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

    def pid(self):
        return self.p.pid

    def close(self):
        stop(self.p)


class HAProxy:
    name = "haproxy"

    def __init__(self, backends, health="/", spare=()):
        self.port = free_port()
        self.sock = f"{WORK}/haproxy.sock"
        servers = "\n".join(f"  server {n} 127.0.0.1:{p} cookie {n}" for n, p in backends)
        servers += "".join(f"\n  server {n} 127.0.0.1:{p} cookie {n} disabled" for n, p in spare)
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
  bind 127.0.0.1:{self.port}
  maxconn 9950
  option forwardfor
  default_backend app
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

    def pid(self):
        return self.p.pid

    def close(self):
        stop(self.p)


class Nginx:
    name = "nginx"

    def __init__(self, backends, health="/"):
        self.port = free_port()
        self.dir = f"{WORK}/nginx-proxy"
        os.makedirs(self.dir, exist_ok=True)
        self.write(backends)
        self.p = start(["nginx", "-p", self.dir, "-c", f"{self.dir}/nginx.conf"])
        wait_port(self.port)

    def write(self, backends):
        d = self.dir
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=2 fail_timeout=2s;" for _, p in backends)
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
    listen 127.0.0.1:{self.port};
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

    def pid(self):
        workers = children(self.p.pid)
        return workers[0] if workers else self.p.pid

    def close(self):
        stop(self.p, signal.SIGQUIT)


# ---------------------------------------------------------------- phase 1: small GET


def wrk(port, path):
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{WRK_SECONDS}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=WRK_SECONDS + 30).stdout
    rps = next(float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec"))
    errors = sum(int(x) for l in out.splitlines() if "Non-2xx" in l for x in l.split()[-1:])
    return rps, errors


def oha(port, path, rate):
    out = subprocess.run(["oha", "--no-tui", "--output-format", "json", "-z", f"{OHA_SECONDS}s",
                          "-q", str(rate), "--latency-correction", "-c", "32",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=OHA_SECONDS + 30).stdout
    data = json.loads(out)
    pct = data["latencyPercentiles"]
    return pct["p50"] * 1000, pct["p99"] * 1000  # ms


def phase_small_get(results):
    """All proxies run side by side (idle when not measured); measurements are interleaved over
    ROUNDS rounds and the median kept, so noise from other load on the machine hits all alike."""
    ports = [free_port(), free_port()]
    backends = [("b1", ports[0]), ("b2", ports[1])]
    static = nginx_static_backends(ports)
    proxies = []
    try:
        targets = {"direct": ports[0]}
        for cls in (Ours, HAProxy, Nginx):
            proxy = cls(backends)
            proxies.append(proxy)
            targets[cls.name] = proxy.port
        for port in targets.values():
            subprocess.run(["oha", "--no-tui", "--output-format", "quiet", "-n", "2000",
                            f"http://127.0.0.1:{port}/"], timeout=30, capture_output=True)
        rps = {name: [] for name in targets}
        lat = {name: {rate: [] for rate in RATES} for name in targets}
        for round_ in range(ROUNDS):
            for name, port in targets.items():
                r, _ = wrk(port, "/")
                rps[name].append(r)
                log(f"[small GET] round {round_ + 1} {name}: {r:.0f} req/s")
            for rate in RATES:
                for name, port in targets.items():
                    lat[name][rate].append(oha(port, "/", rate))
        for name in targets:
            results.setdefault(name, {}).update(
                rps=median(rps[name]), rps_all=rps[name],
                lat={rate: (median([x[0] for x in v]), median([x[1] for x in v]))
                     for rate, v in lat[name].items()})
            log(f"[small GET] {name}: median {results[name]['rps']:.0f} req/s, {results[name]['lat']}")
    finally:
        for proxy in proxies:
            proxy.close()
        stop(static)


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


# ---------------------------------------------------------------- phase 2: idle WebSockets


def ws_count():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # A proxy holds two sockets per tunneled WebSocket; stay under the per-process limit.
    return min(10000, (min(soft, hard) - 150) // 2)


def phase_websockets(results, count):
    backends = [("b1", free_port()), ("b2", free_port())]
    for cls in (Ours, HAProxy, Nginx):
        nodes = [node_backend(n, p) for n, p in backends]
        proxy = cls(backends, health="/peer/health")
        try:
            time.sleep(1.0)
            before = rss_kib(proxy.pid())
            load = start(["node", os.path.join(ROOT, "bench/wsload.js"),
                          f"ws://127.0.0.1:{proxy.port}/sockjs/websocket", str(count), "200"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            opened = json.loads(read_line(load, 120))
            time.sleep(3)
            after = rss_kib(proxy.pid())
            load.stdin.write("go\n")
            load.stdin.flush()
            final = json.loads(read_line(load, 30))
            stop(load)
            per_conn = (after - before) * 1024 / max(opened["opened"], 1)
            results.setdefault(cls.name, {}).update(ws=dict(
                opened=opened["opened"], failed=opened["failed"],
                rate=opened["opened"] / opened["seconds"], per_conn=per_conn,
                dropped=opened["opened"] - final["open"], rss_kib=after))
            log(f"[websockets] {cls.name}: {results[cls.name]['ws']}")
        finally:
            proxy.close()
            for n in nodes:
                stop(n)


def read_line(p, timeout):
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box or not box[0]:
        raise RuntimeError("no output from the load generator")
    return box[0]


# ---------------------------------------------------------------- phase 3: churn


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
    for cls in (Ours, HAProxy, Nginx):
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
            load = start(["node", os.path.join(ROOT, "bench/wsload.js"),
                          f"ws://127.0.0.1:{proxy.port}/sockjs/websocket", "200", "50"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            json.loads(read_line(load, 60))
            names = {"meteor-sticky", "meteor_sticky"}
            sessions = [Session(proxy.port, stats, state, names) for _ in range(30)]
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
            load.stdin.write("go\n")
            load.stdin.flush()
            final = json.loads(read_line(load, 30))
            ws_dropped = sum(v for k, v in final["closedByBackend"].items() if k != "b1")
            failover = max(stats["failover"]) if stats["failover"] else None
            results.setdefault(cls.name, {}).update(churn=dict(
                sessions=stats["sessions"], requests=stats["requests"],
                violations=stats["violations"], errors=stats["errors"],
                failover=failover, ws_dropped=ws_dropped))
            log(f"[churn] {cls.name}: {results[cls.name]['churn']}")
        finally:
            state["stop"] = True
            if load:
                stop(load)
            proxy.close()
            for p in nodes.values():
                stop(p)


# ---------------------------------------------------------------- report


def table(results, ws_n):
    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "n/a"

    ours, ha, ng, direct = (results.get(k, {}) for k in ("meteor-proxy", "haproxy", "nginx", "direct"))
    rows = [
        "| metric | direct | meteor-proxy | HAProxy 2.6 | nginx 1.22 | ours / HAProxy | ours / nginx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    r = lambda d: d.get("rps")
    rows.append(f"| small GET, max req/s (wrk -t1 -c64, median of {ROUNDS}) | {r(direct):.0f} | {r(ours):.0f} | {r(ha):.0f} | "
                f"{r(ng):.0f} | {ratio(r(ours), r(ha))} | {ratio(r(ours), r(ng))} |")
    for rate in RATES:
        for i, q in ((0, "p50"), (1, "p99")):
            v = lambda d: d["lat"][rate][i]
            rows.append(f"| {q} ms at {rate} req/s (oha -q) | {v(direct):.3f} | {v(ours):.3f} | "
                        f"{v(ha):.3f} | {v(ng):.3f} | {ratio(v(ours), v(ha))} | {ratio(v(ours), v(ng))} |")
        added = lambda d: d["lat"][rate][1] - direct["lat"][rate][1]
        rows.append(f"| added p99 ms at {rate} req/s | 0 | {added(ours):.3f} | {added(ha):.3f} | "
                    f"{added(ng):.3f} | {ratio(added(ours), added(ha))} | {ratio(added(ours), added(ng))} |")
    w = lambda d, k: d.get("ws", {}).get(k)
    rows.append(f"| {ws_n} idle WebSockets: proxy memory per connection (bytes) | – | {w(ours, 'per_conn'):.0f} | "
                f"{w(ha, 'per_conn'):.0f} | {w(ng, 'per_conn'):.0f} | {ratio(w(ours, 'per_conn'), w(ha, 'per_conn'))} | "
                f"{ratio(w(ours, 'per_conn'), w(ng, 'per_conn'))} |")
    rows.append(f"| WebSocket connect rate (/s, 200 in flight) | – | {w(ours, 'rate'):.0f} | {w(ha, 'rate'):.0f} | "
                f"{w(ng, 'rate'):.0f} | {ratio(w(ours, 'rate'), w(ha, 'rate'))} | {ratio(w(ours, 'rate'), w(ng, 'rate'))} |")
    rows.append(f"| WebSockets failed to open / dropped while idle | – | {w(ours, 'failed')} / {w(ours, 'dropped')} | "
                f"{w(ha, 'failed')} / {w(ha, 'dropped')} | {w(ng, 'failed')} / {w(ng, 'dropped')} | | |")
    c = lambda d, k: d.get("churn", {}).get(k)
    for key, label in (("violations", "churn: sticky violations"), ("errors", "churn: errors on live backends"),
                       ("ws_dropped", "churn: WebSockets dropped on live backends"),
                       ("requests", "churn: session requests served")):
        rows.append(f"| {label} | – | {c(ours, key)} | {c(ha, key)} | {c(ng, key)} | | |")
    f = lambda d: f"{c(d, 'failover'):.2f}" if c(d, "failover") is not None else "n/a"
    rows.append(f"| churn: failover time after a backend is killed (s) | – | {f(ours)} | {f(ha)} | {f(ng)} | | |")
    return "\n".join(rows)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    results = {}
    n = ws_count()
    try:
        phases = sys.argv[1:] or ["get", "ws", "churn"]
        if "get" in phases:
            phase_small_get(results)
        if "ws" in phases:
            phase_websockets(results, n)
        if "churn" in phases:
            phase_churn(results)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    with open(f"{WORK}/results.json", "w") as f:
        json.dump(results, f, indent=2)
    if not sys.argv[1:]:
        print(f"\nmachine: {os.cpu_count()} cores; one worker thread per proxy; all on 127.0.0.1\n")
        print(table(results, n))
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
