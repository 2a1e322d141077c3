#!/usr/bin/env python3
"""Checks the chart's rendered output against the operator's deployment contract.

    .tools/venv/bin/python hack/check-chart.py [--run-help HELP.txt] RENDERED.yaml...

Each file is one `helm template` of charts/meteor-operator (any values). Checked:
  * every templated object carries the chart's labels;
  * the operator's ClusterRole and the Roles grant exactly the permissions of hack/rbac-used.txt,
    which the tests record from the requests the code really sends (nothing missing, nothing extra,
    no wildcards): a permission the code needs is added to the chart's clusterrole.yaml or role.yaml
    and `bash hack/sync-rbac.sh` records it once a test exercises it; with watchNamespace the
    namespaced permissions are a Role in that namespace and only cluster-scoped ones are
    cluster-wide;
  * the aggregated ClusterRoles for people (templates/aggregate-clusterroles.yaml), when rendered:
    exactly two, <fullname>-edit (labels aggregate-to-admin and aggregate-to-edit) and
    <fullname>-view (aggregate-to-view), granting exactly the verbs of AGGREGATED on meteorapps
    and meteorapps/status, bound to nothing; and, rendering the chart itself (`helm` on PATH):
    there with default values, absent with --set rbac.aggregateToDefaultRoles=false;
  * the proxy ClusterRole (templates/proxy-clusterrole.yaml), when rendered: exactly one,
    <fullname>-proxy, granting exactly get/list/watch on EndpointSlices, bound by nothing in the
    chart (the operator binds it in each app's namespace), and named by the Deployment's
    --proxy-cluster-role;
  * the operator Deployment: restricted security context, args, downward-API env, admin port,
    probes, resources; a PodDisruptionBudget exists exactly when replicas > 1;
  * the metrics Service exposes port `metrics` to the container's `admin` port;
  * with --run-help (the output of `meteor-operator run --help`): every flag the Deployment passes
    is one the operator knows;
  * monitoring, when rendered: the ServiceMonitor keeps the series' labels (honorLabels); the
    dashboard ConfigMaps (label grafana_dashboard: "1") carry monitoring/dashboards/*.json
    unchanged, one each, valid JSON with a unique uid and panels with queries; the PrometheusRule
    has every alert of monitoring/rules/meteor-operator.rules.yaml, each with a severity and a
    runbook_url ending in #<alert in lower case>; the PodMonitor scrapes the proxy pods' admin port
    with honorLabels and labels their series with the app's name (`app`).
Exit status 1 on any failed check.
"""

import json
import os
import re
import subprocess
import sys

import yaml

RBAC_USED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rbac-used.txt")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARDS = os.path.join(ROOT, "monitoring", "dashboards")
RULES = os.path.join(ROOT, "monitoring", "rules", "meteor-operator.rules.yaml")
CHART = os.path.join(ROOT, "charts", "meteor-operator")


def used_rules(path=RBAC_USED):
    """{"ClusterRole"|"Role": {(group, resource): verbs}} from hack/rbac-used.txt."""
    rules = {"ClusterRole": {}, "Role": {}}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 3 or fields[0] not in rules:
                raise SystemExit(f"{path}:{number}: want 'ClusterRole|Role RESOURCE[.GROUP][/SUB] VERB', got {line!r}")
            role, name, verb = fields
            name, _, sub = name.partition("/")
            resource, _, group = name.partition(".")
            key = (group, f"{resource}/{sub}" if sub else resource)
            rules[role].setdefault(key, set()).add(verb)
    if not rules["ClusterRole"]:
        raise SystemExit(f"{path}: no ClusterRole permission recorded")
    return rules


USED = used_rules()
# Kinds that are not namespaced: with watchNamespace they are the only ones bound cluster-wide.
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("storage.k8s.io", "storageclasses")}
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
          "app.kubernetes.io/managed-by", "helm.sh/chart")

# The aggregated ClusterRoles for people: name suffix -> (aggregation labels, {(group, resource): verbs}).
# Users never write status (the operator owns it): read-only even in -edit.
AGGREGATE_PREFIX = "rbac.authorization.k8s.io/aggregate-to-"
READ = {"get", "list", "watch"}
AGGREGATED = {
    "-edit": ({"admin", "edit"}, {
        ("meteorfleet.dev", "meteorapps"): READ | {"create", "update", "patch", "delete", "deletecollection"},
        ("meteorfleet.dev", "meteorapps/status"): READ,
        ("meteorfleet.dev", "meteorapps/scale"): {"get", "update", "patch"},
    }),
    "-view": ({"view"}, {
        ("meteorfleet.dev", "meteorapps"): READ,
        ("meteorfleet.dev", "meteorapps/status"): READ,
        ("meteorfleet.dev", "meteorapps/scale"): {"get"},
    }),
}

# The proxy ClusterRole: what each app's proxies may do in the app's namespace.
PROXY_SUFFIX = "-proxy"
PROXY_RULES = {("discovery.k8s.io", "endpointslices"): READ}

errors = []


def check(condition, message):
    if not condition:
        errors.append(message)


def flatten_rules(obj):
    """{(group, resource): verbs} of a Role/ClusterRole; None when a rule uses a wildcard."""
    out = {}
    for rule in obj.get("rules") or []:
        for field in ("apiGroups", "resources", "verbs"):
            if "*" in (rule.get(field) or []):
                return None
        check(not rule.get("nonResourceURLs"), f"{obj['kind']}: nonResourceURLs are not expected")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                out.setdefault((group, resource), set()).update(rule.get("verbs") or [])
    return out


def check_rules(obj, want):
    got = flatten_rules(obj)
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if got is None:
        errors.append(f"{name}: wildcard ('*') in rules")
        return
    for key in sorted(set(got) | set(want)):
        if got.get(key, set()) != want.get(key, set()):
            group = key[0] or '""'
            errors.append(f"{name}: {group} {key[1]}: verbs {sorted(got.get(key, set()))}, "
                          f"want {sorted(want.get(key, set()))} (what hack/rbac-used.txt records the "
                          f"code using; after changing what the code sends: bash hack/sync-rbac.sh)")


RUN_HELP = None


def check_deployment(dep, where):
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    check(pod.get("automountServiceAccountToken") is True, f"{where}: automountServiceAccountToken must be true")
    psc = pod.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot")
    check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: pod seccompProfile")
    containers = pod["containers"]
    check(len(containers) == 1, f"{where}: one container expected")
    c = containers[0]
    sc = c.get("securityContext") or {}
    check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
    check((sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{where}: capabilities.drop must be [ALL]")
    check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
    check(sc.get("runAsNonRoot") is True, f"{where}: container runAsNonRoot")
    check(sc.get("runAsUser", psc.get("runAsUser")) == 65532, f"{where}: runAsUser must be 65532")
    args = c.get("args") or []
    check(args[:2] == ["run", "--admin-addr=0.0.0.0:8080"], f"{where}: args must start with run --admin-addr=0.0.0.0:8080: {args}")
    check(any(a in ("--log-format=json", "--log-format=text") for a in args), f"{where}: --log-format missing")
    env = {e["name"]: e for e in c.get("env") or []}
    for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        ref = ((env.get(name) or {}).get("valueFrom") or {}).get("fieldRef") or {}
        check(ref.get("fieldPath") == path, f"{where}: env {name} must come from {path}")
    check(bool((env.get("RUST_LOG") or {}).get("value")), f"{where}: env RUST_LOG missing")
    ports = {p.get("name"): p for p in c.get("ports") or []}
    check((ports.get("admin") or {}).get("containerPort") == 8080, f"{where}: port admin 8080 missing")
    check((c.get("livenessProbe") or {}).get("httpGet", {}).get("path") == "/healthz", f"{where}: liveness /healthz")
    check((c.get("readinessProbe") or {}).get("httpGet", {}).get("path") == "/readyz", f"{where}: readiness /readyz")
    res = c.get("resources") or {}
    check(bool((res.get("limits") or {}).get("memory")), f"{where}: memory limit missing")
    check(bool((res.get("requests") or {}).get("cpu")), f"{where}: cpu request missing")
    if RUN_HELP is not None:
        known = set(re.findall(r"--[a-z][-a-z0-9]*", RUN_HELP))
        for arg in args[1:]:
            flag = arg.split("=", 1)[0]
            check(flag in known, f"{where}: `meteor-operator run` has no flag {flag} (see run --help)")
    replicas = spec.get("replicas", 1)
    if replicas > 1:
        check(any(a == "--leader-elect=true" for a in args), f"{where}: replicas > 1 needs --leader-elect=true")


def aggregates_to(obj):
    """The built-in roles ("admin", "edit", "view") a ClusterRole's labels aggregate it into."""
    labels = obj["metadata"].get("labels") or {}
    return {k[len(AGGREGATE_PREFIX):] for k, v in labels.items() if k.startswith(AGGREGATE_PREFIX) and v == "true"}


def is_aggregated(obj):
    labels = obj["metadata"].get("labels") or {}
    return any(k.startswith(AGGREGATE_PREFIX) for k in labels)


def is_proxy_role(obj):
    return (obj["kind"] == "ClusterRole" and not is_aggregated(obj)
            and obj["metadata"]["name"].endswith(PROXY_SUFFIX))


def check_proxy_role(path, roles, fullname, bindings, dep):
    """The proxy ClusterRole: exactly <fullname>-proxy, EndpointSlices read, bound by nothing here,
    passed to the operator."""
    want = fullname + PROXY_SUFFIX
    names = [r["metadata"]["name"] for r in roles]
    check(names == [want], f"{path}: proxy ClusterRoles {names}, want [{want!r}]")
    for role in roles:
        got = flatten_rules(role)
        check(got == PROXY_RULES, f"{path}: ClusterRole/{role['metadata']['name']}: rules {got}, want {PROXY_RULES}")
    for binding in bindings:
        check(binding["roleRef"]["name"] not in names,
              f"{path}: {binding['kind']}/{binding['metadata']['name']} binds the proxy ClusterRole: "
              f"only the operator binds it, per app")
    args = dep["spec"]["template"]["spec"]["containers"][0].get("args") or []
    check(f"--proxy-cluster-role={want}" in args,
          f"{path}: the operator must run with --proxy-cluster-role={want}")


def check_aggregated(path, roles, fullname, bindings):
    """The aggregated ClusterRoles of one rendered file: none, or exactly -edit and -view."""
    if not roles:
        return
    names = sorted(r["metadata"]["name"] for r in roles)
    want_names = sorted(fullname + suffix for suffix in AGGREGATED)
    check(names == want_names, f"{path}: aggregated ClusterRoles {names}, want {want_names}")
    for role in roles:
        name = role["metadata"]["name"]
        suffix = name[len(fullname):] if name.startswith(fullname) else None
        if suffix not in AGGREGATED:
            continue
        want_labels, want_rules = AGGREGATED[suffix]
        got_labels = aggregates_to(role)
        check(got_labels == want_labels, f"{path}: ClusterRole/{name}: aggregates to {sorted(got_labels)} "
              f"(labels {AGGREGATE_PREFIX}*: \"true\"), want {sorted(want_labels)}")
        check("aggregationRule" not in role, f"{path}: ClusterRole/{name}: must not have an aggregationRule")
        got = flatten_rules(role)
        if got is None:
            errors.append(f"{path}: ClusterRole/{name}: wildcard ('*') in rules")
            continue
        for key in sorted(set(got) | set(want_rules)):
            check(got.get(key, set()) == want_rules.get(key, set()),
                  f"{path}: ClusterRole/{name}: {key[0]} {key[1]}: verbs {sorted(got.get(key, set()))}, "
                  f"want {sorted(want_rules.get(key, set()))}")
    for binding in bindings:
        check(binding["roleRef"]["name"] not in names,
              f"{path}: {binding['kind']}/{binding['metadata']['name']} binds aggregated ClusterRole "
              f"{binding['roleRef']['name']}: they are for people, through admin/edit/view")


def check_aggregation_toggle():
    """Renders the chart: the aggregated ClusterRoles are on by default, absent when turned off."""
    for extra, want in (([], 2), (["--set", "rbac.aggregateToDefaultRoles=false"], 0)):
        command = ["helm", "template", "meteor-operator", CHART, "--namespace", "meteor-system"] + extra
        what = " ".join(["helm template"] + extra)
        try:
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            errors.append(f"{what} failed: {getattr(e, 'stderr', '') or e}")
            continue
        docs = [d for d in yaml.safe_load_all(out) if d]
        roles = [d for d in docs if d["kind"] == "ClusterRole" and is_aggregated(d)]
        check(len(roles) == want, f"{what}: {len(roles)} aggregated ClusterRoles, want {want}")
        operator = [d for d in docs if d["kind"] == "ClusterRole" and not is_aggregated(d)
                    and not is_proxy_role(d)]
        check(len(operator) == 1, f"{what}: {len(operator)} operator ClusterRoles, want 1")
        if want and len(operator) == 1:
            before = len(errors)
            check_aggregated(what, roles, operator[0]["metadata"]["name"],
                             [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")])
            if len(errors) == before:
                print(f"ok    {what}: ClusterRoles {', '.join(sorted(r['metadata']['name'] for r in roles))} "
                      f"aggregated into admin/edit/view")
        elif not want and not roles:
            print(f"ok    {what}: no aggregated ClusterRole")


def check_file(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    aggregated = []
    proxy_roles = []
    for doc in docs:
        if doc["kind"] == "ClusterRole" and is_aggregated(doc):
            aggregated.append(doc)  # for people (check_aggregated), not the operator's
        elif is_proxy_role(doc):
            proxy_roles.append(doc)  # for the proxies (check_proxy_role), not the operator's
        else:
            by_kind.setdefault(doc["kind"], []).append(doc)
        if doc["kind"] == "CustomResourceDefinition":
            continue  # crds/ is copied verbatim by Helm
        labels = doc["metadata"].get("labels") or {}
        for label in LABELS:
            check(label in labels, f"{path}: {doc['kind']}/{doc['metadata']['name']}: label {label} missing")
        check(labels.get("app.kubernetes.io/name") == "meteor-operator",
              f"{path}: {doc['kind']}/{doc['metadata']['name']}: app.kubernetes.io/name must be meteor-operator")
    if len(by_kind.get("ClusterRole", [])) == 1:
        check_aggregated(path, aggregated, by_kind["ClusterRole"][0]["metadata"]["name"],
                         by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", []))

    for kind in ("ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Service", "Deployment"):
        check(len(by_kind.get(kind, [])) == 1, f"{path}: expected exactly one {kind}, got {len(by_kind.get(kind, []))}")
    leader = [r for r in by_kind.get("Role", []) if r["metadata"]["name"].endswith("-leader-election")]
    watched = [r for r in by_kind.get("Role", []) if r not in leader]
    check(len(leader) == 1, f"{path}: expected one leader-election Role, got {len(leader)}")
    check(len(watched) <= 1, f"{path}: expected at most one Role for the watched namespace, got {len(watched)}")
    check(len(by_kind.get("RoleBinding", [])) == 1 + len(watched), f"{path}: one RoleBinding per Role")
    if errors:
        return
    dep = by_kind["Deployment"][0]
    if proxy_roles:
        check_proxy_role(path, proxy_roles, by_kind["ClusterRole"][0]["metadata"]["name"],
                         by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", []), dep)
    if watched:
        # watchNamespace: only cluster-scoped kinds cluster-wide, the rest in that namespace.
        namespace = watched[0]["metadata"]["namespace"]
        cluster = {k: v for k, v in USED["ClusterRole"].items() if k in CLUSTER_SCOPED}
        namespaced = {k: v for k, v in USED["ClusterRole"].items() if k not in CLUSTER_SCOPED}
        check_rules(by_kind["ClusterRole"][0], cluster)
        check_rules(watched[0], namespaced)
        args = dep["spec"]["template"]["spec"]["containers"][0].get("args") or []
        check(f"--namespace={namespace}" in args,
              f"{path}: a Role in namespace {namespace}, but the operator does not run with --namespace={namespace}")
        bindings = [b for b in by_kind["RoleBinding"] if b["metadata"].get("namespace") == namespace]
        check(len(bindings) == 1 and bindings[0]["roleRef"]["name"] == watched[0]["metadata"]["name"],
              f"{path}: the Role in {namespace} must be bound there")
    else:
        check_rules(by_kind["ClusterRole"][0], USED["ClusterRole"])
    check_rules(leader[0], USED["Role"])
    check_deployment(dep, f"{path}: Deployment/{dep['metadata']['name']}")
    sa = by_kind["ServiceAccount"][0]["metadata"]["name"]
    check(dep["spec"]["template"]["spec"].get("serviceAccountName") == sa, f"{path}: Deployment must use ServiceAccount {sa}")
    for binding in by_kind["ClusterRoleBinding"] + by_kind["RoleBinding"]:
        check([s["name"] for s in binding["subjects"]] == [sa], f"{path}: {binding['kind']} must bind ServiceAccount {sa}")
    replicas = dep["spec"].get("replicas", 1)
    pdbs = by_kind.get("PodDisruptionBudget", [])
    check(len(pdbs) == (1 if replicas > 1 else 0), f"{path}: {len(pdbs)} PodDisruptionBudgets with {replicas} replicas")
    svc = by_kind["Service"][0]
    ports = svc["spec"]["ports"]
    check([(p["name"], p["targetPort"]) for p in ports] == [("metrics", "admin")],
          f"{path}: metrics Service must expose exactly port metrics -> admin")
    selector = dep["spec"]["selector"]["matchLabels"]
    check(svc["spec"]["selector"] == selector, f"{path}: metrics Service must select the operator pods")
    for sm in by_kind.get("ServiceMonitor", []):
        check([e.get("port") for e in sm["spec"]["endpoints"]] == ["metrics"], f"{path}: ServiceMonitor must scrape port metrics")
        check(all(e.get("honorLabels") is True for e in sm["spec"]["endpoints"]),
              f"{path}: ServiceMonitor must keep the per-app series' namespace (honorLabels: true)")
        check(sm["spec"]["selector"]["matchLabels"].items() <= (svc["metadata"].get("labels") or {}).items(),
              f"{path}: ServiceMonitor must select the metrics Service")
    check_monitoring(path, by_kind)


def check_monitoring(path, by_kind):
    """The dashboards, the alerts and the proxies' PodMonitor, when the values render them."""
    dashboards = [c for c in by_kind.get("ConfigMap", [])
                  if (c["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if dashboards:
        sources = sorted(f for f in os.listdir(DASHBOARDS) if f.endswith(".json"))
        shipped = {}
        for cm in dashboards:
            data = cm.get("data") or {}
            check(len(data) == 1, f"{path}: ConfigMap/{cm['metadata']['name']}: one dashboard per ConfigMap")
            shipped.update(data)
        check(sorted(shipped) == sources, f"{path}: dashboards {sorted(shipped)}, want {sources} (monitoring/dashboards/)")
        uids = set()
        for name, text in shipped.items():
            source = os.path.join(DASHBOARDS, name)
            if os.path.exists(source):
                with open(source) as f:
                    check(text.strip() == f.read().strip(), f"{path}: dashboard {name} differs from monitoring/dashboards/{name} (bash monitoring/sync.sh)")
            try:
                board = json.loads(text)
            except ValueError as e:
                errors.append(f"{path}: dashboard {name} is not JSON: {e}")
                continue
            check(board.get("uid") and board["uid"] not in uids, f"{path}: dashboard {name}: missing or repeated uid")
            uids.add(board.get("uid"))
            check(board.get("title", "").startswith("Meteor / "), f"{path}: dashboard {name}: title must start with 'Meteor / '")
            panels = [p for p in board.get("panels", []) if p.get("type") != "row"]
            check(panels and all(t.get("expr") for p in panels for t in p.get("targets", [None]) if t is not None)
                  and all(p.get("targets") for p in panels), f"{path}: dashboard {name}: every panel needs a query")
    for rule in by_kind.get("PrometheusRule", []):
        with open(RULES) as f:
            want = {r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r}
        alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
        got = {r["alert"] for r in alerts}
        # MeteorOperatorNotLeading only exists with leader election.
        check(got == want or got == want - {"MeteorOperatorNotLeading"},
              f"{path}: PrometheusRule alerts {sorted(got)}, want {sorted(want)}")
        for alert in alerts:
            url = (alert.get("annotations") or {}).get("runbook_url", "")
            check(url.endswith("#" + alert["alert"].lower()), f"{path}: {alert['alert']}: runbook_url must end in #{alert['alert'].lower()}")
            check((alert.get("labels") or {}).get("severity") in ("warning", "critical"), f"{path}: {alert['alert']}: severity")
    for pm in by_kind.get("PodMonitor", []):
        labels = pm["spec"]["selector"].get("matchLabels") or {}
        check(labels.get("app.kubernetes.io/name") == "meteor" and labels.get("app.kubernetes.io/component") == "proxy",
              f"{path}: PodMonitor must select the proxy pods (app.kubernetes.io/name: meteor, component: proxy)")
        for endpoint in pm["spec"]["podMetricsEndpoints"]:
            check(endpoint.get("port") == "admin" and endpoint.get("honorLabels") is True,
                  f"{path}: PodMonitor must scrape port admin with honorLabels")
            check(any(r.get("targetLabel") == "app" and r.get("sourceLabels") == ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"]
                      for r in endpoint.get("relabelings") or []),
                  f"{path}: PodMonitor must label the series with the app's name (app)")


def main():
    global RUN_HELP
    paths = sys.argv[1:]
    if paths[:1] == ["--run-help"]:
        with open(paths[1]) as f:
            RUN_HELP = f.read()
        paths = paths[2:]
    if not paths:
        raise SystemExit(__doc__)
    for path in paths:
        before = len(errors)
        check_file(path)
        print(f"{'ok   ' if len(errors) == before else 'ERROR'} chart contract: {path}")
    check_aggregation_toggle()
    for error in errors:
        print(f"ERROR {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
