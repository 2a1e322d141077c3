#!/usr/bin/env python3
"""Checks that every alert is documented and tested:

    .tools/venv/bin/python monitoring/check-rules.py

  * every alert of monitoring/rules/meteor-operator.rules.yaml has a runbook_url ending in
    #<alert name in lower case>, and docs/monitoring.md has a heading of that name (its runbook
    paragraph);
  * monitoring/rules/meteor-operator.test.yaml has, for every alert, a case where it fires and a
    case where it does not (an alert_rule_test with exp_alerts empty);
  * every alert has a severity of warning or critical, a summary and a description.
Exit status 1 on any failed check.
"""

import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "rules", "meteor-operator.rules.yaml")
TESTS = os.path.join(HERE, "rules", "meteor-operator.test.yaml")
DOC = os.path.join(os.path.dirname(HERE), "docs", "monitoring.md")


def anchors(markdown):
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            text = re.sub(r"[`*]", "", m.group(1)).strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def main():
    errors = []
    alerts = [r for g in yaml.safe_load(open(RULES))["groups"] for r in g["rules"] if "alert" in r]
    doc = anchors(open(DOC).read())
    firing, silent = set(), set()
    for test in yaml.safe_load(open(TESTS))["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    for alert in alerts:
        name = alert["alert"]
        url = alert.get("annotations", {}).get("runbook_url", "")
        anchor = url.partition("#")[2]
        if anchor != name.lower():
            errors.append(f"{name}: runbook_url {url!r} must end in #{name.lower()}")
        if anchor not in doc:
            errors.append(f"{name}: docs/monitoring.md has no heading '{name}' (#{anchor}) for its runbook")
        if name not in firing:
            errors.append(f"{name}: no test case in {os.path.basename(TESTS)} where it fires")
        if name not in silent:
            errors.append(f"{name}: no test case in {os.path.basename(TESTS)} where it stays silent (exp_alerts: [])")
        if alert.get("labels", {}).get("severity") not in ("warning", "critical"):
            errors.append(f"{name}: severity must be warning or critical")
        for key in ("summary", "description"):
            if not alert.get("annotations", {}).get(key):
                errors.append(f"{name}: no {key} annotation")
    known = {a["alert"] for a in alerts}
    for name in sorted((firing | silent) - known):
        errors.append(f"{os.path.basename(TESTS)} tests an alert the rules do not have: {name}")
    for error in errors:
        print(f"ERROR {error}")
    print(f"{'ERROR' if errors else 'ok   '} {len(alerts)} alerts: runbook in docs/monitoring.md, a firing and a silent test case each")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
