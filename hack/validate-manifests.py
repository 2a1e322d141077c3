#!/usr/bin/env python3
"""Strict offline validation of Kubernetes manifests.

Run with the venv from hack/install-tools.sh (it has kubernetes-validate):

    .tools/venv/bin/python hack/validate-manifests.py [--kubernetes-version 1.33.0] \
        [--crd crds/meteorapps.yaml] FILE... ("-" reads standard input)

Every document is checked against the Kubernetes JSON schemas shipped by kubernetes-validate in
strict mode: unknown fields are errors. Unlike the kubernetes-validate CLI, a kind without a schema
is an ERROR, not a warning, except for:
  * kinds defined by a CRD passed with --crd: checked against the CRD's openAPIV3Schema
    (structural, strict: unknown fields are errors; CEL rules are NOT evaluated here);
  * monitoring.coreos.com/v1 ServiceMonitor, PodMonitor and PrometheusRule,
    gateway.networking.k8s.io/v1 HTTPRoute and cert-manager.io/v1 Certificate: checked against
    small built-in schemas covering the fields this project uses, with the upstream CRDs' names,
    enums and patterns (unknown fields are errors).
Also an error: a file with no objects, an object without apiVersion/kind/metadata.name, and the same
kind/namespace/name twice in one file.
Exit status: 0 when every object passed, 1 otherwise.
"""

import argparse
import copy
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}

SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string", "minLength": 1},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "matchExpressions": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


def strict(properties, required=()):
    """An object with exactly these properties."""
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": properties}


STRING = {"type": "string", "minLength": 1}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# Gateway API's Duration (GEP-2257) and its hostnames.
GATEWAY_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
GATEWAY_HOSTNAME = {
    "type": "string",
    "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
OWNED_METADATA = strict({
    "name": STRING,
    "namespace": STRING,
    "labels": STRING_MAP,
    "annotations": STRING_MAP,
    "ownerReferences": {"type": "array", "items": strict({
        "apiVersion": STRING, "kind": STRING, "name": STRING, "uid": STRING,
        "controller": {"type": "boolean"}, "blockOwnerDeletion": {"type": "boolean"},
    }, ["apiVersion", "kind", "name", "uid"])},
}, ["name"])


def resource(api_version, kind, spec):
    return strict({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                   "metadata": OWNED_METADATA, "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])


HTTP_ROUTE_SCHEMA = resource("gateway.networking.k8s.io/v1", "HTTPRoute", strict({
    "parentRefs": {"type": "array", "minItems": 1, "maxItems": 32, "items": strict({
        "group": {"const": "gateway.networking.k8s.io"}, "kind": {"const": "Gateway"},
        "name": STRING, "namespace": STRING, "sectionName": STRING,
    }, ["name"])},
    "hostnames": {"type": "array", "maxItems": 16, "items": GATEWAY_HOSTNAME},
    "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": strict({
        "matches": {"type": "array", "items": strict({"path": strict({
            "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
            "value": {"type": "string", "pattern": "^/"},
        }, ["type", "value"])})},
        "backendRefs": {"type": "array", "items": strict({
            "kind": {"const": "Service"}, "name": STRING,
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        }, ["name", "port"])},
        # Experimental channel (GEP-1619).
        "sessionPersistence": strict({
            "sessionName": {"type": "string", "maxLength": 128},
            "type": {"enum": ["Cookie", "Header"]},
            "absoluteTimeout": GATEWAY_DURATION,
            "idleTimeout": GATEWAY_DURATION,
            "cookieConfig": strict({"lifetimeType": {"enum": ["Permanent", "Session"]}}),
        }),
    })},
}, ["parentRefs", "rules"]))

LABEL_NAME = {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}
RELABELING = strict({
    "sourceLabels": {"type": "array", "items": LABEL_NAME},
    "separator": {"type": "string"},
    "targetLabel": LABEL_NAME,
    "regex": {"type": "string"},
    "modulus": {"type": "integer", "minimum": 1},
    "replacement": {"type": "string"},
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                        "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                        "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                        "dropequal", "DropEqual"]},
})
LABEL_SELECTOR = strict({
    "matchLabels": STRING_MAP,
    "matchExpressions": {"type": "array", "items": {"type": "object"}},
})
NAMESPACE_SELECTOR = strict({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STRING}})

POD_MONITOR_SCHEMA = resource("monitoring.coreos.com/v1", "PodMonitor", strict({
    "jobLabel": {"type": "string"},
    "podTargetLabels": {"type": "array", "items": STRING},
    "selector": LABEL_SELECTOR,
    "namespaceSelector": NAMESPACE_SELECTOR,
    "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": strict({
        "port": STRING,
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https"]},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
        "relabelings": {"type": "array", "items": RELABELING},
        "metricRelabelings": {"type": "array", "items": RELABELING},
    })},
}, ["selector", "podMetricsEndpoints"]))

# The Prometheus Operator's PrometheusRule: rule groups as Prometheus loads them (its rule file
# format; promtool checks the expressions themselves).
PROMETHEUS_RULE_SCHEMA = resource("monitoring.coreos.com/v1", "PrometheusRule", strict({
    "groups": {"type": "array", "minItems": 1, "items": strict({
        "name": STRING,
        "interval": DURATION,
        "limit": {"type": "integer", "minimum": 0},
        "rules": {"type": "array", "minItems": 1, "items": {
            "oneOf": [
                strict({"alert": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                        "expr": STRING, "for": DURATION, "keep_firing_for": DURATION,
                        "labels": STRING_MAP, "annotations": STRING_MAP}, ["alert", "expr"]),
                strict({"record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                        "expr": STRING, "labels": STRING_MAP}, ["record", "expr"]),
            ],
        }},
    }, ["name", "rules"])},
}, ["groups"]))

CERTIFICATE_SCHEMA = resource("cert-manager.io/v1", "Certificate", strict({
    "secretName": STRING,
    "dnsNames": {"type": "array", "items": STRING},
    "ipAddresses": {"type": "array", "items": STRING},
    "issuerRef": strict({"group": STRING, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                         "name": STRING}, ["name"]),
}, ["secretName", "issuerRef"]))


def openapi_to_jsonschema(node):
    """Turns a structural OpenAPI v3 schema (as in a CRD) into a strict JSON schema."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: openapi_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = openapi_to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = openapi_to_jsonschema(value)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "format", "description", "default", "title", "example"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def crd_schemas(path):
    """{(apiVersion, kind): jsonschema} for every served version of every CRD in path."""
    schemas = {}
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = openapi_to_jsonschema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                # The apiserver owns these; a structural schema need not list their fields.
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"const": f"{group}/{version['name']}"}
                props["kind"] = {"const": kind}
                props["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    if not schemas:
        raise SystemExit(f"ERROR {path}: no CustomResourceDefinition found")
    return schemas


def where(error):
    return ".".join(str(p) for p in error.absolute_path) or "(root)"


def validate_file(filename, version, custom, verbose):
    text = sys.stdin.read() if filename == "-" else open(filename).read()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        print(f"ERROR {filename}: not YAML: {e}")
        return 1, 0
    if not docs:
        print(f"ERROR {filename}: no objects")
        return 1, 0
    errors = 0
    seen = set()
    for doc in docs:
        if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind", "metadata")):
            print(f"ERROR {filename}: a document is not a Kubernetes object (apiVersion, kind, metadata)")
            errors += 1
            continue
        name = (doc.get("metadata") or {}).get("name")
        ident = f"{doc['kind']}/{name}"
        if not name:
            print(f"ERROR {filename}: {doc['kind']} without metadata.name")
            errors += 1
            continue
        key = (doc["apiVersion"].split("/")[0], doc["kind"], doc["metadata"].get("namespace"), name)
        if key in seen:
            print(f"ERROR {filename}: {ident} appears twice")
            errors += 1
        seen.add(key)
        schema = custom.get((doc["apiVersion"], doc["kind"]))
        try:
            if schema is not None:
                jsonschema.Draft202012Validator(schema).validate(doc)
            else:
                kv.validate(doc, version, strict=True)
            if verbose:
                print(f"ok    {filename}: {ident} ({doc['apiVersion']})")
        except jsonschema.ValidationError as e:
            print(f"ERROR {filename}: {ident}: {where(e)}: {e.message}")
            errors += 1
        except kv.SchemaNotFoundError as e:
            print(f"ERROR {filename}: {ident}: {e.message} (add a schema to hack/validate-manifests.py)")
            errors += 1
    print(f"{'ERROR' if errors else 'ok   '} {filename}: {len(docs)} objects, {errors} errors")
    return errors, len(docs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubernetes-version", default="1.33.0")
    parser.add_argument("--crd", action="append", default=[], help="CRD file whose kinds to accept")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every object that passed")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    custom = {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
        ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR_SCHEMA,
        ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA,
        ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE_SCHEMA,
        ("cert-manager.io/v1", "Certificate"): CERTIFICATE_SCHEMA,
    }
    for path in args.crd:
        custom.update(crd_schemas(path))

    total_errors = total_docs = 0
    for filename in args.files:
        errors, docs = validate_file(filename, args.kubernetes_version, custom, args.verbose)
        total_errors += errors
        total_docs += docs
    status = "FAILED" if total_errors else "passed"
    print(f"validation {status}: {total_docs} objects, {total_errors} errors (Kubernetes {args.kubernetes_version}, strict)")
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
