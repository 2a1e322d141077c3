#!/usr/bin/env python3
"""Instructions per small GET, ours against HAProxy, each run under callgrind (valgrind).

Unlike the CPU time of bench/bench.py, an instruction count does not move with the load of a
shared machine, so it shows what a change to the hot path did. It counts user space only (the
kernel's TCP work, about two thirds of either proxy's CPU per request, is not in it).

For each proxy and each kind (`get`; `cookie`: the sticky cookie sent back on every request;
`xff`: an `X-Forwarded-For` line on every request, as from an Ingress in front, with ours told to
trust one hop, `METEOR_PROXY_TRUSTED_HOPS=1`, which a proxy without the flag ignores): the proxy starts under `valgrind --tool=callgrind` in front of the static backends of
bench.py's `get` phase, takes 2,000 warm-up GETs, has its counters zeroed
(`callgrind_control -z`), serves BENCH_N GETs (20,000) from `oha -c64`, and its counters are
dumped (`callgrind_control -d`). Printed: instructions per request and the ratio.
Run by `bash bench/run.sh callgrind` (about a minute).

With BENCH_BASELINE_BIN=PATH (another build of `meteor-proxy`, e.g. of the commit before a
change), that binary is measured the same way too, a second table compares the two, and the
script exits 1 when this build takes more than BENCH_MAX_INCREASE (3 %) more instructions per
request than the baseline for any kind: the budget of hot-path additions such as metrics.
"""
import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (the harness: processes, ports, backends, the proxies' setups)

N = int(os.environ.get("BENCH_N", "20000"))
WORK = f"{B.WORK}/callgrind"
BASELINE = os.environ.get("BENCH_BASELINE_BIN")
MAX_INCREASE = float(os.environ.get("BENCH_MAX_INCREASE", "0.03"))


class Baseline(B.Ours):
    """Ours, started from BENCH_BASELINE_BIN instead of PROXY_BIN."""
    name = "meteor-proxy-baseline"

    def __init__(self, backends):
        cmd = B.PROXY_CMD
        B.PROXY_CMD = [BASELINE]
        try:
            super().__init__(backends)
        finally:
            B.PROXY_CMD = cmd


def under_callgrind(cls, backends, out):
    """`cls` (B.Ours or B.HAProxy) started under callgrind, writing its counts to `out`.*"""
    start, wait_port = B.start, B.wait_port
    B.start = lambda cmd, **kw: start(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd], **kw)
    B.wait_port = lambda port, timeout=60: wait_port(port, timeout)  # valgrind starts slowly
    try:
        return cls(backends)
    finally:
        B.start, B.wait_port = start, wait_port


def oha(url, n, headers):
    out = subprocess.run(["oha", "--no-tui", "--output-format", "json", "-n", str(n), "-c", "64",
                          *headers, url], capture_output=True, text=True, timeout=600).stdout
    return json.loads(out)["statusCodeDistribution"]


def instructions_per_request(cls, backends, kind):
    out = f"{WORK}/{cls.name}-{kind}.out"
    for old in glob.glob(out + "*"):
        os.remove(old)
    if kind == "xff":
        os.environ["METEOR_PROXY_TRUSTED_HOPS"] = "1"
    try:
        proxy = under_callgrind(cls, backends, out)
    finally:
        os.environ.pop("METEOR_PROXY_TRUSTED_HOPS", None)
    try:
        url = proxy.url("/")
        headers = ["-H", f"Cookie: {B.sticky_cookie(url)}"] if kind == "cookie" else []
        if kind == "xff":
            headers = ["-H", "X-Forwarded-For: 203.0.113.7"]
        oha(url, 2000, headers)
        subprocess.run(["callgrind_control", "-z", str(proxy.p.pid)], check=True, capture_output=True)
        codes = oha(url, N, headers)
        subprocess.run(["callgrind_control", "-d", str(proxy.p.pid)], check=True, capture_output=True)
        if codes != {"200": N}:
            sys.exit(f"{cls.name} {kind}: answers {codes}, not {N} × 200")
        dump = max(glob.glob(out + ".*"), key=os.path.getmtime)
        with open(dump) as f:
            total = next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
        return total / N
    finally:
        proxy.close()


def main():
    os.makedirs(WORK, exist_ok=True)
    ports = [B.free_port(), B.free_port()]
    static = B.nginx_static_backends(ports)
    backends = [("b1", ports[0]), ("b2", ports[1])]
    try:
        rows, compared, over = [], [], []
        kinds = (("get", "small GET"), ("cookie", "small GET with the sticky cookie"),
                 ("xff", "small GET with one X-Forwarded-For line, one trusted hop"))
        for kind, label in kinds:
            ours, haproxy = (instructions_per_request(cls, backends, kind)
                             for cls in (B.Ours, B.HAProxy))
            B.log(f"[callgrind] {kind}: ours {ours:.0f}, haproxy {haproxy:.0f}")
            rows.append(f"| {label}: instructions per request (callgrind, {N} requests, oha -c64) "
                        f"| {ours:,.0f} | {haproxy:,.0f} | {ours / haproxy:.2f} |")
            if BASELINE:
                base = instructions_per_request(Baseline, backends, kind)
                change = ours / base - 1
                B.log(f"[callgrind] {kind}: baseline {base:.0f}, change {change:+.1%}")
                compared.append(f"| {label} | {ours:,.0f} | {base:,.0f} | {change:+.1%} |")
                if change > MAX_INCREASE:
                    over.append(f"{kind}: {change:+.1%}")
    finally:
        B.stop(static)
    print("\n| metric | meteor-proxy | HAProxy | ours / HAProxy |\n| --- | ---: | ---: | ---: |")
    print("\n".join(rows))
    if BASELINE:
        print(f"\n| instructions per request | this build | baseline ({BASELINE}) | change |\n"
              "| --- | ---: | ---: | ---: |")
        print("\n".join(compared))
        if over:
            sys.exit(f"more than {MAX_INCREASE:.0%} above the baseline: {', '.join(over)}")


if __name__ == "__main__":
    main()
