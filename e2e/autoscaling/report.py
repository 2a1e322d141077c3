#!/usr/bin/env python3
"""Which app pods a scale-down removed, against the pod-deletion-cost the operator gave them.

    python3 report.py CONFIG_JSON

config: {"pods": PATH, "appReplicas": PATH, "deployReplicas": PATH, "sessions": PATH,
         "plan": {pod: sessions planned}, "loadStopped": EPOCH, "mode": "costs" | "unknown"}

pods: watch.py lines "T NAME|COST|DELETION-TIMESTAMP|CREATION-TIMESTAMP" of the app pods (COST
the controller.kubernetes.io/pod-deletion-cost annotation, '' when unset); appReplicas and
deployReplicas: "T N" (the MeteorApp's and the app Deployment's spec.replicas); sessions: the
JSON lines of sessions.py. All times are this host's clock.

A pod is removed when the watch first shows it terminating. For each removal the costs in
effect are the latest annotations of the pods not terminating at that point of the watch (one
stream, so the operator's annotation patches, made before it lowered the Deployment, come
before the ReplicaSet controller's deletions).

mode "costs" fails (exit 1) when:
  - an app pod carried a pod-deletion-cost before the load stopped (costs are set for a
    scale-down, not before);
  - a pod not terminating had no pod-deletion-cost when one was removed;
  - a removed pod's cost was above another remaining pod's cost (the emptiest must go first);
  - at the first removal, a pod's cost differs from the sessions sessions.py held on it then
    (the cost is the pod's open sessions summed over the proxies).
mode "unknown" (the operator said SessionsUnknown: it could not read the proxies) only prints
what happened. Both fail when no pod was removed after the load stopped.
Prints a timeline and a table (pod, sessions, cost, removed?).
"""
import json
import sys

config = json.loads(sys.argv[1])
plan = config.get("plan") or {}
stopped = float(config["loadStopped"])
mode = config.get("mode", "costs")
problems, notes = [], []


def lines(path):
    try:
        with open(path) as f:
            for line in f:
                t, _, rest = line.rstrip("\n").partition(" ")
                if rest:
                    yield float(t), rest
    except FileNotFoundError:
        return


def rel(t):
    return "%+.1fs" % (t - stopped)


# --- sessions (sessions.py): per backend pod, intervals during which a session was open -----
intervals, current, end_t = [], {}, None
with open(config["sessions"]) as f:
    for line in f:
        e = json.loads(line)
        if e.get("event") == "open":
            current[e["session"]] = (e["backend"], e["t"])
        elif e.get("event") == "closed" and e["session"] in current:
            backend, opened = current.pop(e["session"])
            intervals.append((backend, opened, e["t"], e.get("why", "")))
        elif e.get("event") == "end":
            end_t = e["t"]
for backend, opened in current.values():
    intervals.append((backend, opened, float("inf"), ""))


def open_at(pod, t):
    return sum(1 for b, o, c, _ in intervals if b == pod and o <= t < c)


# --- pods: removals and the costs in effect at each ----------------------------------------
state, removals, first_cost = {}, [], None
for t, rest in lines(config["pods"]):
    fields = rest.split("|")
    if len(fields) < 4:
        continue
    name, cost, deleting, created = fields[:4]
    pod = state.setdefault(name, {"created": created, "cost": "", "terminating": None, "seen": t})
    if cost and first_cost is None:
        first_cost = (t, name, cost)
    pod["cost"] = cost
    if deleting and pod["terminating"] is None:
        pod["terminating"] = t
        costs = {n: p["cost"] for n, p in state.items() if p["terminating"] is None or n == name}
        removals.append({"t": t, "pod": name, "costs": costs})

after = [r for r in removals if r["t"] >= stopped]
before = [r for r in removals if r["t"] < stopped]
if before:
    problems.append("app pods removed before the load stopped: %s" % ", ".join(r["pod"] for r in before))
if not after:
    problems.append("no app pod was removed after the load stopped")

# --- replicas timeline --------------------------------------------------------------------
timeline = []
for what, key in (("MeteorApp spec.replicas", "appReplicas"), ("Deployment spec.replicas", "deployReplicas")):
    last = None
    for t, value in lines(config[key]):
        if value != last:
            if last is not None:
                timeline.append((t, "%s %s -> %s" % (what, last, value)))
            last = value
for i, r in enumerate(after, 1):
    shown = ", ".join("%s=%s" % (n, c or "unset") for n, c in sorted(r["costs"].items(), key=lambda x: x[0]))
    timeline.append((r["t"], "removal %d: %s terminating; costs then: %s" % (i, r["pod"], shown)))
timeline.sort()

# --- verdict --------------------------------------------------------------------------------
def as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


if mode == "costs":
    if first_cost and first_cost[0] < stopped:
        problems.append("%s carried pod-deletion-cost %s at %s, before the load stopped (costs belong to a scale-down)"
                        % (first_cost[1], first_cost[2], rel(first_cost[0])))
    for i, r in enumerate(after, 1):
        costs = {n: as_int(c) for n, c in r["costs"].items()}
        unset = sorted(n for n, c in costs.items() if c is None)
        if unset:
            problems.append("removal %d (%s): no pod-deletion-cost on %s" % (i, r["pod"], ", ".join(unset)))
            continue
        mine = costs[r["pod"]]
        higher = sorted(n for n, c in costs.items() if n != r["pod"] and c < mine)
        if higher:
            problems.append("removal %d: %s (cost %d) went while %s had a lower cost (%s)"
                            % (i, r["pod"], mine, ", ".join(higher), ", ".join(str(costs[n]) for n in higher)))
        if i == 1:
            # The operator read the proxies just before; allow this host a few seconds of skew.
            for n, c in sorted(costs.items()):
                seen = {open_at(n, r["t"] - k / 2) for k in range(7)}
                if c not in seen:
                    problems.append("removal 1: %s had pod-deletion-cost %d, but %s sessions open on it"
                                    % (n, c, "/".join(str(s) for s in sorted(seen))))
else:
    notes.append("the operator could not read the proxies (SessionsUnknown): it scaled down without costs; the ReplicaSet controller chose by its own ranking")

# --- table ----------------------------------------------------------------------------------
removed_at = {r["pod"]: (i, r["t"]) for i, r in enumerate(after, 1)}
print("| pod | created | sessions planned | open sessions (at its removal, or at the end) | pod-deletion-cost | removed |")
print("| --- | --- | --- | --- | --- | --- |")
for name, pod in sorted(state.items(), key=lambda x: (x[1]["created"], x[0])):
    if name in removed_at:
        i, t = removed_at[name]
        sessions, removed = open_at(name, t - 0.5), "yes (%d, at %s)" % (i, rel(t))
        cost = next(r["costs"][name] for r in after if r["pod"] == name)
    else:
        sessions, removed, cost = open_at(name, (end_t or float("inf")) - 0.5), "no", pod["cost"]
        if pod["terminating"] is not None:
            removed = "terminating at %s (before the load stopped)" % rel(pod["terminating"])
    print("| %s | %s | %s | %d | %s | %s |" % (name, pod["created"], plan.get(name, "-"), sessions, cost or "unset", removed))
print()
print("timeline (relative to the load stopping):")
for t, what in timeline:
    print("  %s  %s" % (rel(t), what))
kept = {n for n, p in state.items() if p["terminating"] is None}
dropped = [(b, why) for b, o, c, why in intervals if b in kept and c != float("inf") and why != "stopped"]
print("sessions on the pods that stayed that ended before the scenario stopped them: %d%s"
      % (len(dropped), (" (%s)" % "; ".join(sorted({"%s: %s" % d for d in dropped}))) if dropped else ""))
for note in notes:
    print("note: " + note)
if problems:
    for p in problems:
        print("FAIL: " + p)
    sys.exit(1)
print("ok: %d pods removed%s" % (len(after), ", each with the lowest pod-deletion-cost of the pods left" if mode == "costs" else ""))
