#!/usr/bin/env python3
"""Autoscaling scenario of the proxy (issue 9): what a scale-up and a scale-down cost sessions.

Run alone through `bash bench/run.sh autoscaling` (or `python3 bench/autoscaling.py` once the
proxy is built and the Node peers installed). Figures, not a timed test: it prints a table.
Everything on 127.0.0.1: real SockJS backends (proxy/tests/peers/backend.js), two replicas of
the proxy sharing a cookie key and a backends file (as two proxy pods follow one Service), and
browser-like WebSocket clients (bench/browsers.js: keep the sticky cookie, reconnect 10 ms
after a close through a random replica).

 up    scale-up from 2 to 4 backends with BENCH_N (1,000) open WebSockets, rebalancing at
       --rebalance-rate 5 per replica, tolerance 20 %: time until every backend is within
       ±20 % of the mean, reconnects per second at the peak (any 1 s window), sessions
       misrouted (an echo from another backend than the socket's own: must be 0).
 down  scale-down from 4 to 2 backends under uneven load (40/30/20/10 % of BENCH_N, pinned by
       cookie, rebalancing off so the load stays uneven): WebSockets disconnected when the two
       removed backends are the emptiest by their open sessions summed over the replicas (what
       the operator's pod-deletion-cost makes the ReplicaSet controller do) and when they are
       chosen at random (BENCH_SEED), same load, same run; plus the expectation over all pairs.
"""

import datetime
import http.client
import json
import os
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (the harness: processes, ports, Node backends)

WORK = B.WORK + "-autoscaling"
BROWSERS = os.path.join(B.ROOT, "bench/browsers.js")
N = int(os.environ.get("BENCH_N", "1000"))
RATE = 5  # --rebalance-rate per replica (the default)
REPLICAS = 2
NAMES = ("b1", "b2", "b3", "b4")
SHARES = (0.4, 0.3, 0.2, 0.1)  # uneven load of the scale-down
DRAIN = 2  # --drain-timeout of the scale-down, seconds


def http_get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r, r.read().decode()
    finally:
        conn.close()


class Replica:
    """One proxy replica following the shared backends file."""

    def __init__(self, backends_file, flags, log):
        self.port, self.admin = B.free_port(), B.free_port()
        self.log = log
        # Each rebalancing close is logged (debug), with the proxy's own timestamp.
        self.p = B.start(B.PROXY_CMD + [
            "--threads", "1", "--listen", f"127.0.0.1:{self.port}",
            "--admin-listen", f"127.0.0.1:{self.admin}", "--backends-file", backends_file,
            "--cookie-key-file", f"{WORK}/cookie.key", "--health-path", "/peer/health"] + flags,
            # The browser-like clients are one address, 127.0.0.1: no per-client cap.
            env={**os.environ, "RUST_LOG": "warn,meteor_proxy::rebalance=debug",
                 "METEOR_PROXY_MAX_CONNECTIONS_PER_CLIENT": "0"},
            stderr=open(log, "w"))
        B.wait_port(self.port)

    def closes(self):
        """The instants (epoch seconds, the proxy's clock) of its rebalancing closes."""
        stamps = []
        with open(self.log) as f:
            for line in f:
                if "WebSocket closed to rebalance" in line:
                    stamp = re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0]
                    stamps.append(datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                                  .timestamp())
        return stamps

    def backends(self):
        return json.loads(http_get(self.admin, "/-/status")[1])["backends"]

    def metric(self, name):
        text = http_get(self.admin, "/metrics")[1]
        return next(float(l.split()[1]) for l in text.splitlines() if l.split(" ")[0] == name)


class Fleet:
    """Four SockJS backends, REPLICAS proxies; `serve(names)` is what the Service lists."""

    def __init__(self, flags):
        os.makedirs(WORK, exist_ok=True)
        with open(f"{WORK}/cookie.key", "w") as f:
            f.write("autoscaling benchmark cookie key")
        self.ports = {n: B.free_port() for n in NAMES}
        self.names = {f"127.0.0.1:{p}": n for n, p in self.ports.items()}
        self.nodes = [B.node_backend(n, p) for n, p in self.ports.items()]
        self.file = f"{WORK}/backends.txt"
        self.serve(NAMES[:2])
        self.replicas = [Replica(self.file, flags, f"{WORK}/replica-{i}.log")
                         for i in range(REPLICAS)]

    def serve(self, names):
        with open(self.file + ".new", "w") as f:
            f.write("".join(f"127.0.0.1:{self.ports[n]}\n" for n in names))
        os.replace(self.file + ".new", self.file)

    def live(self, field="websockets"):
        """`field` per live backend (listed, up), summed over the replicas."""
        total = {}
        for r in self.replicas:
            for b in r.backends():
                if b["ready"] and b["up"] and not b["removed"] and not b["terminating"]:
                    name = self.names[b["id"]]
                    total[name] = total.get(name, 0) + b[field]
        return dict(sorted(total.items()))

    def wait_live(self, names, timeout=30):
        """Until every replica lists exactly `names`, all up, none draining."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(sorted(self.names[b["id"]] for b in r.backends()
                          if b["up"] and not b["removed"]) == sorted(names)
                   and not any(b["removed"] for b in r.backends())
                   for r in self.replicas):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the replicas do not list {names}")

    def urls(self):
        return [f"ws://127.0.0.1:{r.port}/sockjs/websocket" for r in self.replicas]

    def close(self):
        for r in self.replicas:
            B.stop(r.p)
        for n in self.nodes:
            B.stop(n)


def browsers(fleet, groups):
    config = dict(urls=fleet.urls(), groups=groups, pingMs=2000, concurrency=100)
    load = B.start(["node", BROWSERS, json.dumps(config)], stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, text=True)
    opened = B.read_json(load, max(120, N / 20))
    return load, opened


def stats(load):
    B.tell(load, "stats")
    return B.read_json(load, 30)


def peak_per_second(times):
    """Most events in any 1 s window."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times)), default=0)


def scale_up(results):
    fleet = Fleet(["--rebalance-rate", str(RATE), "--rebalance-tolerance", "20"])
    load = None
    try:
        fleet.wait_live(NAMES[:2])
        load, opened = browsers(fleet, [dict(count=N, cookie=None)])
        time.sleep(3)  # older than the rebalancer's 2 s minimum age
        before = fleet.live()
        stats(load)  # forget the closes so far (none expected)
        began = time.time()
        fleet.serve(NAMES)
        mean = N / len(NAMES)
        within = stopped = None
        last, changed = None, began
        while time.time() < began + 300:
            counts = fleet.live()
            closes = sum(r.metric("meteor_proxy_rebalanced_total") for r in fleet.replicas)
            now = time.time()
            if within is None and len(counts) == 4 and all(
                    abs(c - mean) <= 0.2 * mean for c in counts.values()):
                within = now - began
            if closes != last:
                last, changed = closes, now
            elif within is not None and now - changed > 3:
                stopped = changed - began
                break
            time.sleep(0.1)
        after = stats(load)
        times = [t / 1000 for t, *_ in after["closes"]]
        results["up"] = dict(
            n=opened["opened"], failed=opened["failed"] + after["failed"], before=before,
            after=fleet.live(), within_s=within, stopped_s=stopped, closes=len(times),
            rebalanced=int(last or 0), peak_per_s=peak_per_second(times),
            steered=int(sum(r.metric("meteor_proxy_rebalance_steered_total")
                            for r in fleet.replicas)),
            misrouted=after["misrouted"], open=after["open"],
            proxy_peak_per_s=peak_per_second([t for r in fleet.replicas for t in r.closes()]),
            replica_peak_per_s=max(peak_per_second(r.closes()) for r in fleet.replicas),
            logged=sum(len(r.closes()) for r in fleet.replicas))
        B.log(f"[scale-up] {results['up']}")
    finally:
        if load:
            B.stop(load)
        fleet.close()


def cookies_per_backend(replica):
    """A sticky cookie naming each backend: least connections rotates among idle backends."""
    found = {}
    for _ in range(40):
        r, _ = http_get(replica.port, "/peer/whoami")
        cookie = next(c.split(";")[0] for c in r.headers.get_all("Set-Cookie"))
        found.setdefault(r.headers["X-Backend"], cookie)
        if len(found) == len(NAMES):
            return found
    raise RuntimeError(f"cookies for {sorted(found)} only")


def scale_down(results):
    fleet = Fleet(["--rebalance-rate", "0", "--drain-timeout", f"{DRAIN}s"])
    rng = random.Random(B.SEED)
    try:
        fleet.serve(NAMES)
        fleet.wait_live(NAMES)
        cookies = cookies_per_backend(fleet.replicas[0])
        groups = [dict(count=round(N * s), cookie=cookies[n]) for n, s in zip(NAMES, SHARES)]

        def trial(label, choose):
            fleet.serve(NAMES)
            fleet.wait_live(NAMES)
            load, opened = browsers(fleet, groups)
            try:
                time.sleep(1)
                # What the operator writes as pod-deletion-cost: open sessions over all proxies.
                costs = fleet.live("active")
                removed = choose(costs)
                stats(load)
                fleet.serve([n for n in NAMES if n not in removed])
                time.sleep(DRAIN + 3)  # the drain closes them over DRAIN s; they reconnect
                after = stats(load)
                by = {}
                for _, backend, _ in after["closes"]:
                    by[backend] = by.get(backend, 0) + 1
                # A client closed twice (its reconnect reached a replica that had not yet read
                # the new list, then drained there) is one session disconnected.
                clients = len({client for *_, client in after["closes"]})
                run = dict(removed=sorted(removed), costs=costs, disconnected=clients,
                           closes=len(after["closes"]),
                           by_backend=by, reopened=after["open"], n=opened["opened"],
                           misrouted=after["misrouted"])
                B.log(f"[scale-down] {label}: {run}")
                return run
            finally:
                B.tell(load, "quit")
                B.stop(load)

        ours = trial("deletion cost", lambda c: sorted(c, key=c.get)[:2])
        chosen = rng.sample(NAMES, 2)
        rnd = trial("random", lambda c: chosen)
        costs = ours["costs"]
        pairs = [(a, b) for i, a in enumerate(NAMES) for b in NAMES[i + 1:]]
        expected = sum(costs[a] + costs[b] for a, b in pairs) / len(pairs)
        results["down"] = dict(ours=ours, random=rnd, random_expected=expected)
    finally:
        fleet.close()


def table(results):
    rows = ["| autoscaling scenario | figure |", "| --- | ---: |"]
    up = results.get("up")
    if up:
        fmt = lambda d: " / ".join(f"{k} {v}" for k, v in d.items())  # noqa: E731
        rows += [
            f"| scale-up 2 → 4 backends: open WebSockets (browser-like, {REPLICAS} proxy replicas "
            f"at --rebalance-rate {RATE}, budget {RATE * REPLICAS}/s) | {up['n']} |",
            f"| per backend before the scale-up | {fmt(up['before'])} |",
            f"| per backend once rebalancing stopped | {fmt(up['after'])} |",
            f"| time until every backend is within ±20 % of the mean (s) | "
            f"{up['within_s']:.1f} |" if up["within_s"] is not None else
            "| time until every backend is within ±20 % of the mean (s) | not within 300 s |",
            f"| rebalancing stopped after (s) | "
            + (f"{up['stopped_s']:.1f} |" if up["stopped_s"] is not None else "– |"),
            f"| WebSockets closed to rebalance (clients saw / proxies counted) | "
            f"{up['closes']} / {up['rebalanced']} |",
            f"| rebalancing closes per second at the peak, any 1 s window, proxies' clocks: "
            f"both replicas / busiest replica (budget {RATE * REPLICAS} / {RATE}) | "
            f"{up['proxy_peak_per_s']} / {up['replica_peak_per_s']} |",
            f"| reconnects per second at the peak, any 1 s window, as the clients saw them "
            f"(their event loop delays some) | {up['peak_per_s']} |",
            f"| reconnects steered off their cookie's backend | {up['steered']} |",
            f"| sessions misrouted | {up['misrouted']} |",
            f"| WebSockets open at the end / failed handshakes | {up['open']} / {up['failed']} |",
        ]
    down = results.get("down")
    if down:
        def cell(run):
            removed = ", ".join(f"{n} ({run['costs'][n]})" for n in run["removed"])
            return f"{run['disconnected']} in {run['closes']} closes (removed {removed})"
        shares = "/".join(f"{round(s * 100)}" for s in SHARES)
        rows += [
            f"| scale-down 4 → 2 backends, {down['ours']['n']} WebSockets at {shares} %: "
            f"sessions disconnected, removing the two emptiest (deletion cost) | "
            f"{cell(down['ours'])} |",
            f"| the same, two chosen at random (BENCH_SEED={B.SEED}) | {cell(down['random'])} |",
            f"| the same, random: expectation over the 6 pairs | {down['random_expected']:.0f} |",
            f"| scale-down: sessions misrouted (both trials) | "
            f"{down['ours']['misrouted'] + down['random']['misrouted']} |",
        ]
    return "\n".join(rows)


PHASES = {"up": scale_up, "down": scale_down}


def main():
    phases = B.chosen_phases(PHASES, sys.argv[1:])
    results, elapsed = B.run_phases(PHASES, phases)
    with open(f"{WORK}/results.json", "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nautoscaling {' '.join(phases)} in {elapsed / 60:.1f} min "
          f"(BENCH_SEED={B.SEED}); {os.cpu_count()} cores; all on 127.0.0.1\n")
    print(table(results))
    print(f"\nraw figures: {WORK}/results.json")


if __name__ == "__main__":
    main()
