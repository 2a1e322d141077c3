"""The fleet-wide change's table (e2e/run.sh, fleet_change), from poll.py's records and the
times each batch was applied. Exits 1 when it did not converge or the p99 lag passes the bound.
Usage: report.py OUT_DIR STARTED P99_BOUND POLLER_STATUS KILLS"""

import json
import sys


def main():
    out, started, bound, rc, kills = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    seen = json.load(open(out + "/seen.json"))
    applied = {}
    for line in open(out + "/applied"):
        first, end, at = line.split()
        for i in range(int(first), int(end)):
            applied[f"fleet-{i:04d}"] = float(at)
    lags = sorted(max(0.0, seen[name] - at) for name, at in applied.items() if name in seen)
    missing = [name for name in applied if name not in seen]
    last = open(out + "/progress").read().splitlines()[-1]

    def pct(p):
        return lags[min(len(lags) - 1, int(p * len(lags)))] if lags else float("nan")

    done = float(open(out + "/done").read()) - started if rc == 0 else None
    print("| apps | operator SIGKILLs | all Deployments on the new image, all apps Ready | "
          "image change → status.observedGeneration p50 / p99 / max |")
    print("|---|---|---|---|")
    took = f"{done:.0f} s" if done is not None else "not within 900 s"
    worst = lags[-1] if lags else float("nan")
    print(f"| {len(applied)} | {kills} | {took} | {pct(0.5):.0f} / {pct(0.99):.0f} / {worst:.0f} s |")
    print("last poll:", last)
    failed = []
    if rc != 0:
        failed.append(f"not converged within 900 s ({last}); never observed: {len(missing)} apps, e.g. {missing[:5]}")
    if lags and pct(0.99) > bound:
        failed.append(f"p99 lag {pct(0.99):.0f} s (target: at most {bound:.0f} s)")
    for f in failed:
        print("MISSED:", f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
