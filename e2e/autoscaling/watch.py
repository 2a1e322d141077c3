#!/usr/bin/env python3
"""Timestamps what a `kubectl get --watch` prints, for the e2e `autoscaling` scenario.

    python3 watch.py OUT KUBECTL-ARGS...

Runs `kubectl KUBECTL-ARGS...` (a --watch with a jsonpath output printing one line per object
state) and appends each non-empty line to OUT as "EPOCH-SECONDS LINE" (this host's clock, the
clock of sessions.py), flushed at once. SIGTERM stops kubectl and exits 0.
"""
import signal
import subprocess
import sys
import time

out_path, args = sys.argv[1], sys.argv[2:]
watch = subprocess.Popen(["kubectl"] + args, stdout=subprocess.PIPE, text=True)


def stop(*_):
    watch.terminate()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
with open(out_path, "a") as out:
    for line in watch.stdout:
        line = line.strip()
        if line:
            out.write("%.3f %s\n" % (time.time(), line))
            out.flush()
sys.exit(watch.wait())
