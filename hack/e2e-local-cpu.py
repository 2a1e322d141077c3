#!/usr/bin/env python3
"""The CPU figures of the loopback control plane's metrics API (hack/e2e-local.sh): every 2 s,
the CPU time each running pod's program really used (utime + stime in /proc/PID/stat; the pids
come from hack/e2e-local-runtime.py), as a rate over the last 15 s (metrics-server's window), is
written to ../shared/cluster/fake_metrics.py's usage file:

    {"cpu": {"NAMESPACE/POD": "123m", ...}, "default_cpu": "0", "default_memory": "64Mi"}

so the HorizontalPodAutoscaler scales on what the pods really burn (pods that do not run here
count 0).

    python3 hack/e2e-local-cpu.py --pids DIR --out FILE
"""
import argparse
import json
import os
import time

WINDOW = 15.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%s/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command: state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / TICK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pids", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=2.0)
    a = ap.parse_args()
    history = {}  # "ns/pod" -> [(t, pid, cpu seconds)]
    while True:
        now = time.time()
        seen = set()
        try:
            names = os.listdir(a.pids)
        except OSError:
            names = []
        for name in names:
            ns, _, pod = name.partition(".")
            key = ns + "/" + pod
            try:
                with open(os.path.join(a.pids, name)) as f:
                    pid = int(f.read().strip())
                used = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue
            samples = [s for s in history.get(key, []) if s[1] == pid and now - s[0] <= WINDOW + a.interval]
            samples.append((now, pid, used))
            history[key] = samples
            seen.add(key)
        for key in list(history):
            if key not in seen:
                del history[key]
        cpu = {}
        for key, samples in history.items():
            if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
                rate = (samples[-1][2] - samples[0][2]) / (samples[-1][0] - samples[0][0])
                cpu[key] = "%dm" % max(0, round(rate * 1000))
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"cpu": cpu, "default_cpu": "0", "default_memory": "64Mi"}, f, indent=1, sort_keys=True)
        os.replace(tmp, a.out)
        time.sleep(max(0.1, a.interval - (time.time() - now)))


if __name__ == "__main__":
    main()
