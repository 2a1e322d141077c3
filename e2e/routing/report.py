"""Figures of the e2e `routing` soak: what the sessions of `client.js soak` saw while the app
was scaled and rolled. Prints the tables and exits 1 (with the reasons) when a session was
misrouted, when a kind of session never held to its end, or when no session reached the pods
added by the scale or the roll.

    python3 report.py SOAK.jsonl TERMINATING MARKS DRAIN_SECONDS SCALED_PODS ROLLED_PODS

SOAK.jsonl   one JSON line per session (client.js soak).
TERMINATING  "EPOCH POD" lines: when this host first saw each app pod terminating
             (deletionTimestamp set), from a `kubectl get pods --watch`.
MARKS        "EPOCH PHASE" lines: when each phase (steady, scale, roll, settled) began.
DRAIN_SECONDS  spec.rollout.drainSeconds: the proxy keeps a terminating pod's sessions that long.
SCALED_PODS, ROLLED_PODS  comma-separated app pods created by the scale and by the roll.

A session is *misrouted* when any of its requests was answered by a pod other than its own
(a reply or X-Backend from another pod, or SockJS's "Server lost session" / a send answered
404) while its own pod was still to keep it: not terminating, or terminating for less than
DRAIN_SECONDS - SLACK (watch latency on both sides). Such an answer after that is the proxy
re-pinning the session of a pod that left: the session is *dropped*, as is every session that
ended before its hold time for any other reason (a WebSocket closed by the drain, a failed
request). Times are this host's clock on both sides (client.js and the watch).
"""
import collections
import json
import sys

SLACK = 3.0


def main():
    soak, terminating_file, marks_file, drain, scaled, rolled = sys.argv[1:7]
    drain = float(drain)
    scaled = {p for p in scaled.split(",") if p}
    rolled = {p for p in rolled.split(",") if p}
    sessions = [json.loads(line) for line in open(soak) if line.strip()]
    terminating = {}
    for line in open(terminating_file):
        parts = line.split()
        if len(parts) >= 2:
            terminating.setdefault(parts[1], float(parts[0]))
    marks = sorted((float(t), phase) for t, phase in (line.split(None, 1) for line in open(marks_file) if line.strip()))
    marks = [(t, phase.strip()) for t, phase in marks]

    def phase_at(t):
        current = marks[0][1] if marks else "?"
        for start, phase in marks:
            if t >= start:
                current = phase
        return current

    def verdict(s):
        """(outcome, detail): held, misrouted, dropped, unopened."""
        own = s.get("backend")
        if not own:
            return "unopened", s.get("error")
        left = terminating.get(own)
        for f in s.get("foreign") or []:
            if left is None or f["t"] < left + drain - SLACK:
                state = "not terminating" if left is None else f"terminating for {f['t'] - left:.1f} s of its {drain:.0f} s drain"
                return "misrouted", f"{s['kind']} via {s['via']}, session {s['session']} of {own}: {f['what']} while {own} was {state}"
        if s.get("outcome") == "held":
            return "held", None
        if s.get("foreign"):
            return "dropped", f"re-pinned after {own} left ({s['foreign'][0]['what']})"
        return "dropped", s.get("error")

    rows = collections.OrderedDict()
    phases = collections.OrderedDict((phase, collections.Counter()) for _, phase in marks)
    reasons = collections.Counter()
    misrouted = []
    backends = collections.Counter()
    for s in sorted(sessions, key=lambda s: (s.get("kind", ""), s.get("via", ""))):
        outcome, detail = verdict(s)
        key = (s.get("kind", "?"), s.get("via", "?"))
        row = rows.setdefault(key, collections.Counter())
        row["sessions"] += 1
        row[outcome] += 1
        phase = phases.setdefault(phase_at(s.get("end") or s.get("start") or 0), collections.Counter())
        phase["sessions"] += 1
        phase[outcome] += 1
        if s.get("backend"):
            backends[s["backend"]] += 1
        if outcome == "misrouted":
            misrouted.append(detail)
        elif outcome in ("dropped", "unopened"):
            reasons[f"{outcome}: {str(detail)[:100]}"] += 1
    pods_by_row = collections.defaultdict(set)
    for s in sessions:
        if s.get("backend"):
            pods_by_row[(s.get("kind", "?"), s.get("via", "?"))].add(s["backend"])

    def line(cells):
        print("| " + " | ".join(str(c) for c in cells) + " |")

    print()
    line(["sessions (client.js soak)", "via proxy", "sessions", "held to the end", "dropped", "never opened", "misrouted", "app pods"])
    line(["---"] * 8)
    totals = collections.Counter()
    for (kind, via), row in rows.items():
        totals.update(row)
        line([kind, via, row["sessions"], row["held"], row["dropped"], row["unopened"], row["misrouted"], len(pods_by_row[(kind, via)])])
    line(["**all**", "", totals["sessions"], totals["held"], totals["dropped"], totals["unopened"], totals["misrouted"], len(backends)])
    print()
    line(["phase (by a session's end)", "sessions", "held to the end", "dropped", "never opened", "misrouted"])
    line(["---"] * 6)
    for phase, row in phases.items():
        line([phase, row["sessions"], row["held"], row["dropped"], row["unopened"], row["misrouted"]])
    print()
    if reasons:
        print("why sessions ended early:")
        for reason, n in reasons.most_common(8):
            print(f"  {n:5d}  {reason}")
    print(f"app pods that served sessions: {len(backends)} "
          f"({len(scaled & set(backends))} of the {len(scaled)} added by the scale, "
          f"{len(rolled & set(backends))} of the {len(rolled)} created by the roll)")

    failed = []
    if misrouted:
        failed.append(f"{len(misrouted)} sessions misrouted (want 0); first ones:")
        failed.extend("  " + m for m in misrouted[:10])
    for (kind, via), row in rows.items():
        if row["held"] == 0:
            failed.append(f"no {kind} session via {via} held to its end ({row['sessions']} tried)")
    if not rows:
        failed.append("the soak client reported no session")
    if scaled and not scaled & set(backends):
        failed.append(f"no session reached the pods added by the scale ({', '.join(sorted(scaled))}): the proxy did not follow the EndpointSlices")
    if rolled and not rolled & set(backends):
        failed.append(f"no session reached the pods created by the roll ({', '.join(sorted(rolled))}): the proxy did not follow the EndpointSlices")
    for f in failed:
        print("FAILED:", f)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
