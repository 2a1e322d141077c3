"""The dashboards and alerts against a running Prometheus: the part of monitoring/live-test.py that
does not care what Prometheus scrapes (local processes and a fake API server in CI, or the
operator and the proxy pods of a real cluster with `live-test.py --against-cluster`).

  * start_prometheus(): Debian's `prometheus` on a free loopback port, with the chart's default
    rules (monitoring/rules/meteor-operator.rules.yaml) and the given scrape configs, every second;
  * Checker, check_dashboards(), check_rules(), self_check(): every panel expression and variable
    query of monitoring/dashboards/*.json (with the variables bound as given) and every rule
    expression, evaluated through Prometheus' HTTP API, with the failures of live-test.py's
    docstring;
  * report(): the table, the "declared, no series here" selectors, the alerts Prometheus holds,
    the counts and the closing line (`NAME: passed` or `NAME: FAILED (N problems)`).

Imported by live-test.py (not run on its own).
"""

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPERATOR_JOB = "meteor-operator-metrics"
RULES = os.path.join(HERE, "rules", "meteor-operator.rules.yaml")
DASHBOARDS = os.path.join(HERE, "dashboards")
GRAFANA = {"__rate_interval": "30s", "__interval": "5s", "__range": "5m"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2"}
# What report() counts as a panel query with no data (each such panel's metrics are declared).
NO_SERIES = "declared, no series here"


def log(message):
    print(f"    {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if http_get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAILED: {url} did not answer 200 within {seconds}s")


# --- processes ------------------------------------------------------------------------------------

class Procs:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, env=None):
        log_path = os.path.join(self.workdir, f"{name}.log")
        out = open(log_path, "wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.append((name, proc, log_path))
        return proc, log_path

    def stop(self):
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + 10
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check_alive(self):
        for name, proc, log_path in self.procs:
            if proc.poll() is not None:
                tail = open(log_path, errors="replace").read()[-2000:]
                raise SystemExit(f"FAILED: {name} exited ({proc.returncode}):\n{tail}")


# --- Prometheus -----------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url):
        self.url = url

    def api(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        try:
            return self.api("query", query=expr)["result"], None
        except urllib.error.HTTPError as e:
            return None, e.read().decode(errors="replace")[:300]

    def series(self, name, start):
        return self.api("series", **{"match[]": name, "start": f"{start:.3f}"})


def start_prometheus(procs, workdir, scrape_configs):
    """Prometheus on a free loopback port (its TSDB in workdir), scraping and evaluating the rules
    every second; returns once it is ready."""
    prom_port = free_port()
    config = os.path.join(workdir, "prometheus.yml")
    with open(config, "w") as f:
        json.dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [RULES],
            "scrape_configs": scrape_configs,
        }, f)
    procs.start("prometheus", [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn", "--storage.tsdb.retention.time=1h"])
    prom = Prometheus(f"http://127.0.0.1:{prom_port}")
    wait_http(f"{prom.url}/-/ready", 60)
    return prom


def declared_families(texts):
    """Metric names a scrape declares (# TYPE), with the sample names they stand for."""
    names = set()
    for text in texts:
        for match in re.finditer(r"^# TYPE (\S+) (\w+)", text, re.M):
            name, kind = match.groups()
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind == "histogram":
                names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def substitute(expr, binding):
    values = {**GRAFANA, **binding}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def selectors(expr):
    """(metric name, matchers text) of every vector selector in a PromQL expression."""
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found = []
    for m in re.finditer(r"(?<![\w.$\"])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matchers = m.group(1), m.group(2) or ""
        if name in KEYWORDS:
            continue
        if not matchers and text[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        found.append((name, matchers))
    return found


def label_names(matchers):
    return re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", matchers)


def variable_selector(query):
    """label_values(SELECTOR, LABEL) -> (SELECTOR, LABEL)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", query)
    return (m.group(1), m.group(2)) if m else (None, None)


class Checker:
    def __init__(self, prom, declared, start):
        self.prom, self.declared, self.start = prom, declared, start
        self.failures = []
        self.conditional = {}
        self._labels = {}

    def labels_of(self, name):
        if name not in self._labels:
            keys = set()
            for series in self.prom.series(name, self.start):
                keys.update(series)
            self._labels[name] = keys
        return self._labels[name]

    def check_selectors(self, where, expr):
        """Every metric known, every label name carried. Returns whether every selector matched
        series right now."""
        all_matched = True
        for name, matchers in selectors(expr):
            labels = self.labels_of(name)
            if not labels:
                if name in self.declared:
                    self.conditional.setdefault(name, set()).add(where)
                    all_matched = False
                else:
                    self.failures.append(f"{where}: no series {name} and no scrape declares it (misspelled or missing): {expr}")
                continue
            for label in label_names(matchers):
                if label not in labels:
                    self.failures.append(f"{where}: no series of {name} has a label {label!r} (it has {sorted(labels - {'__name__'})}): {expr}")
            if matchers:
                result, error = self.prom.query(f"{name}{matchers}")
                if error or not result:
                    self.conditional.setdefault(f"{name}{matchers}", set()).add(where)
                    all_matched = False
        return all_matched

    def evaluate(self, where, expr):
        result, error = self.prom.query(expr)
        if error:
            self.failures.append(f"{where}: Prometheus refused the expression: {error}: {expr}")
            return None
        return result


def check_dashboards(checker, all_bindings, owner="live-test.py BINDINGS"):
    """Every variable query and panel expression of monitoring/dashboards/*.json, with each
    dashboard's variables bound in turn to each binding of all_bindings[dashboard name]."""
    rows = []
    for path in sorted(os.listdir(DASHBOARDS)):
        if not path.endswith(".json"):
            continue
        name = path[:-5]
        board = json.load(open(os.path.join(DASHBOARDS, path)))
        bindings = all_bindings.get(name)
        if bindings is None:
            checker.failures.append(f"{path}: no variable bindings in {owner}")
            continue
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector, label = variable_selector(query)
            where = f"{name} variable ${variable['name']}"
            if selector is None:
                checker.failures.append(f"{where}: not a label_values(selector, label) query: {query}")
                continue
            ok = False
            for binding in bindings:
                expr = substitute(f"count by ({label}) ({selector})", binding)
                checker.check_selectors(where, substitute(selector, binding))
                result = checker.evaluate(where, expr)
                ok = ok or any(r["metric"].get(label) for r in result or [])
            if not ok:
                checker.failures.append(f"{where}: {query} gives no value for any binding")
            rows.append((where, "values" if ok else "NONE"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                where = f"{name} / {panel['title']} / {target['refId']}"
                data = check_panel_expr(checker, where, target["expr"], bindings)
                rows.append((where, "data" if data else NO_SERIES))
    return rows


def check_panel_expr(checker, where, expr, bindings):
    """A panel's query: its selectors known, and data for some binding unless a selector matched
    nothing (a series that exists only under some condition). Returns whether it had data."""
    data = False
    matched = True
    for binding in bindings:
        bound = substitute(expr, binding)
        matched = checker.check_selectors(where, bound) and matched
        data = bool(checker.evaluate(where, bound)) or data
    if not data and matched:
        checker.failures.append(f"{where}: returns nothing for every binding although each selector matched series: {expr}")
    return data


def self_check(prom, declared, start, binding):
    """The checker catches what it is for: each of these must fail (binding: an app whose proxy
    and operator series exist)."""
    broken = {
        "a misspelled metric": 'sum(rate(meteor_proxy_request_duraton_seconds_count{namespace="$namespace"}[1m]))',
        "a misspelled label": 'max(meteor_app_condition{namespace="$namespace",aap="$app"})',
        "a join that cannot match": 'meteor_app_replicas_ready{namespace="$namespace",app="$app"} / on (backend) meteor_proxy_active_sessions{namespace="$namespace",app="$app"}',
    }
    missed = []
    for what, expr in broken.items():
        checker = Checker(prom, declared, start)
        check_panel_expr(checker, "self-check", expr, [binding])
        if not checker.failures:
            missed.append(what)
    return missed


def check_rules(checker, prom):
    import yaml
    rows = []
    groups = yaml.safe_load(open(RULES))["groups"]
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            where = f"rule {name}"
            checker.check_selectors(where, rule["expr"])
            result = checker.evaluate(where, rule["expr"])
            rows.append((where, f"returns {len(result)} series" if result else "returns nothing now"))
    live = prom.api("rules")["groups"]
    loaded = 0
    for group in live:
        for rule in group["rules"]:
            loaded += 1
            if rule.get("health") != "ok":
                checker.failures.append(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
    want = sum(len(g["rules"]) for g in groups)
    if loaded != want:
        checker.failures.append(f"Prometheus loaded {loaded} rules, the file has {want}")
    return rows


def check_all(prom, checker, self_check_binding):
    """The dashboards (check_dashboards, called by the caller with its bindings, gives rows), the
    rules and the self-check: the rows to add after the dashboards' rows."""
    rows = check_rules(checker, prom)
    missed = self_check(prom, checker.declared, checker.start, self_check_binding)
    if missed:
        checker.failures.append(f"self-check: the checker did not catch {', '.join(missed)}")
    else:
        rows.append(("self-check: a misspelled metric, a misspelled label, a join that cannot match", "each caught"))
    return rows


def counts(rows):
    """(panel queries, rules, variable queries, panel queries without data) of report rows."""
    return (sum(1 for r in rows if " / " in r[0]), sum(1 for r in rows if r[0].startswith("rule ")),
            sum(1 for r in rows if "variable" in r[0]), sum(1 for r in rows if r[1] == NO_SERIES))


def report(prom, checker, rows, name, extra=None):
    """Prints the results and the closing line `NAME: passed` (returns 0) or `NAME: FAILED (N
    problems)` (returns 1). extra: a line printed after the counts, if any."""
    width = max(len(r[0]) for r in rows)
    print()
    for where, what in rows:
        print(f"    {where:<{width}}  {what}")
    if checker.conditional:
        print("\n    declared by the scrapes, no series in this run (series that exist only under")
        print("    conditions the run does not create), by selector:")
        for selector, wheres in sorted(checker.conditional.items()):
            print(f"      {selector}  ({len(wheres)} uses)")
    firing = [a for a in prom.api("alerts")["alerts"]]
    print("\n    alerts Prometheus holds now: " +
          (", ".join(sorted(f"{a['labels']['alertname']}({a['labels'].get('app', '')}) {a['state']}" for a in firing)) or "none"))
    panels, rules, variables, _ = counts(rows)
    print(f"\n    {panels} panel queries, {rules} rules, {variables} variable queries checked")
    if extra:
        print(f"    {extra}")
    if checker.failures:
        print()
        for failure in checker.failures:
            print(f"    FAIL {failure}")
        print(f"\n{name}: FAILED ({len(checker.failures)} problems)")
        return 1
    print(f"\n{name}: passed")
    return 0


def legend(fmt, metric):
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()
    return text or ",".join(f"{k}={v}" for k, v in metric.items() if k != "__name__")
