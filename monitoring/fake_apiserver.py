"""A small Kubernetes API server stand-in for monitoring/live-test.py: enough for a real
`meteor-operator run` to list, watch, win its Lease and reconcile a few MeteorApps, so that its
/metrics endpoint shows the series a cluster would give it. Not a test of the operator (the Rust
tests do that, with RBAC checks): it answers

  * LIST with the seeded objects of that resource (MeteorApps, Deployments with a status, a
    HorizontalPodAutoscaler), empty for the rest; WATCH held open, silent;
  * GET of a seeded object (or its metadata), 404 otherwise; GET of a Secret named in
    `failing` with 500 (a reconcile error);
  * PATCH and POST by echoing the object with a uid, a resourceVersion and the seeded status of
    that name (a Deployment the operator applies comes back as ready as the seed says);
  * Leases for real enough: GET, POST (409 when it exists), PATCH merging `spec`.
"""

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = {
    "meteorapps": ("meteorfleet.dev/v1alpha1", "MeteorAppList"),
    "deployments": ("apps/v1", "DeploymentList"),
    "statefulsets": ("apps/v1", "StatefulSetList"),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicyList"),
    "services": ("v1", "ServiceList"),
    "secrets": ("v1", "SecretList"),
    "configmaps": ("v1", "ConfigMapList"),
    "poddisruptionbudgets": ("policy/v1", "PodDisruptionBudgetList"),
    "ingresses": ("networking.k8s.io/v1", "IngressList"),
    "serviceaccounts": ("v1", "ServiceAccountList"),
    "roles": ("rbac.authorization.k8s.io/v1", "RoleList"),
    "rolebindings": ("rbac.authorization.k8s.io/v1", "RoleBindingList"),
    "horizontalpodautoscalers": ("autoscaling/v2", "HorizontalPodAutoscalerList"),
    "pods": ("v1", "PodList"),
    "customresourcedefinitions": ("apiextensions.k8s.io/v1", "CustomResourceDefinitionList"),
    "events": ("events.k8s.io/v1", "EventList"),
    "leases": ("coordination.k8s.io/v1", "LeaseList"),
}


def parse_path(path):
    """(resource, namespace, name, subresource) of an API path."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) == 2 and rest[0] == "namespaces":
        return ("namespaces", None, rest[1], None)
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return resource, namespace, name, sub


class FakeApi:
    def __init__(self, objects, failing=()):
        # (resource, namespace, name) -> object
        self.objects = {}
        for resource, obj in objects:
            meta = obj["metadata"]
            self.objects[(resource, meta.get("namespace"), meta["name"])] = obj
        self.failing = set(failing)
        self.version = 100
        self.lock = threading.Lock()
        self.requests = []
        self.stopping = threading.Event()
        self.server = None

    def next_version(self):
        with self.lock:
            self.version += 1
            return str(self.version)

    def serve(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def body(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return None

            def reply(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def handle_any(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                body = self.body() if self.command in ("POST", "PATCH", "PUT") else None
                api.requests.append((self.command, url.path))
                parsed = parse_path(url.path)
                if parsed is None:
                    return self.reply(404, status(404, "NotFound", url.path))
                code, answer = api.answer(self.command, parsed, query, body,
                                          self.headers.get("Accept") or "",
                                          self.headers.get("Content-Type") or "")
                if code == "watch":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    # Silent until the test ends (the operator's own timeout ends it earlier).
                    api.stopping.wait(timeout=300)
                    self.close_connection = True
                    return
                self.reply(code, answer)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address

    def stop(self):
        self.stopping.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    # --- answers ----------------------------------------------------------------------------

    def answer(self, method, parsed, query, body, accept, content_type):
        resource, namespace, name, sub = parsed
        if method == "GET" and name is None:
            if query.get("watch", [""])[0] in ("true", "1"):
                return "watch", None
            return 200, self.list(resource, namespace, accept)
        if resource == "leases":
            return self.lease(method, namespace, name, body)
        key = (resource, namespace, name)
        if method == "GET":
            if resource == "secrets" and name in self.failing:
                return 500, status(500, "InternalError", f"etcd is having a bad day reading {name}")
            obj = self.objects.get(key)
            if obj is None:
                return 404, status(404, "NotFound", f'{resource} "{name}" not found')
            if "PartialObjectMetadata" in accept:
                return 200, {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                             "metadata": obj["metadata"]}
            return 200, obj
        if method == "POST":
            if resource == "events":
                return 201, body
            name = (body or {}).get("metadata", {}).get("name")
            if (resource, namespace, name) in self.objects:
                return 409, status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            return 201, self.store(resource, namespace, name, body)
        if method in ("PATCH", "PUT"):
            if resource == "events":
                return 200, body
            if sub == "status":
                app = dict(self.objects.get(key) or {})
                app["status"] = (body or {}).get("status")
                self.objects[key] = app
                return 200, app
            return 200, self.store(resource, namespace, name, body)
        if method == "DELETE":
            self.objects.pop(key, None)
            return 200, status(200, "Success", "deleted")
        return 405, status(405, "MethodNotAllowed", method)

    def store(self, resource, namespace, name, body):
        obj = json.loads(json.dumps(body or {}))
        previous = self.objects.get((resource, namespace, name)) or {}
        meta = obj.setdefault("metadata", {})
        meta.setdefault("name", name)
        if namespace:
            meta["namespace"] = namespace
        meta["uid"] = previous.get("metadata", {}).get("uid") or f"uid-{resource}-{name}"
        meta["resourceVersion"] = self.next_version()
        meta["generation"] = previous.get("metadata", {}).get("generation", 1)
        meta.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        if "status" in previous:
            obj["status"] = previous["status"]
        self.objects[(resource, namespace, name)] = obj
        return obj

    def list(self, resource, namespace, accept):
        api_version, kind = KINDS.get(resource, ("v1", "List"))
        items = [o for (r, ns, _), o in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
                 if r == resource and (namespace is None or ns == namespace)]
        if "PartialObjectMetadata" in accept:
            api_version, kind = "meta.k8s.io/v1", "PartialObjectMetadataList"
            items = [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                      "metadata": o["metadata"]} for o in items]
        return {"apiVersion": api_version, "kind": kind,
                "metadata": {"resourceVersion": str(self.version)}, "items": items}

    def lease(self, method, namespace, name, body):
        key = ("leases", namespace, name)
        stored = self.objects.get(key)
        if method == "GET":
            return (200, stored) if stored else (404, status(404, "NotFound", f'leases "{name}" not found'))
        if method == "POST":
            name = body["metadata"]["name"]
            key = ("leases", namespace, name)
            if key in self.objects:
                return 409, status(409, "AlreadyExists", f'leases "{name}" already exists')
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": name, "namespace": namespace, "uid": f"uid-lease-{name}",
                                  "resourceVersion": self.next_version()},
                     "spec": dict(body.get("spec") or {})}
            self.objects[key] = lease
            return 201, lease
        if method in ("PATCH", "PUT"):
            if stored is None:
                if method == "PUT":
                    return 404, status(404, "NotFound", f'leases "{name}" not found')
                stored = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                          "metadata": {"name": name, "namespace": namespace, "uid": f"uid-lease-{name}"},
                          "spec": {}}
            wanted = (body or {}).get("metadata", {}).get("resourceVersion")
            if wanted and stored["metadata"].get("resourceVersion") and wanted != stored["metadata"]["resourceVersion"]:
                return 409, status(409, "Conflict", "the object has been modified")
            spec = dict(stored.get("spec") or {}) if method == "PATCH" else {}
            for field, value in ((body or {}).get("spec") or {}).items():
                if value is None:
                    spec.pop(field, None)
                else:
                    spec[field] = value
            stored["spec"] = spec
            stored["metadata"]["resourceVersion"] = self.next_version()
            self.objects[key] = stored
            return 200, stored
        return 405, status(405, "MethodNotAllowed", method)


def status(code, reason, message):
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure" if code >= 400 else "Success",
            "code": code, "reason": reason, "message": message}


def owned_by(app):
    return [{"apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp", "name": app["metadata"]["name"],
             "uid": app["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def deployment(app, name, replicas, ready, component):
    labels = {"app.kubernetes.io/name": "meteor", "app.kubernetes.io/instance": app["metadata"]["name"],
              "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": "meteor-operator"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": app["metadata"]["namespace"], "uid": f"uid-deploy-{name}",
                     "resourceVersion": "10", "generation": 1, "labels": labels,
                     "ownerReferences": owned_by(app)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "x"}]}}},
        "status": {"observedGeneration": 1000, "replicas": replicas, "readyReplicas": ready,
                   "availableReplicas": ready, "updatedReplicas": replicas},
    }


def app(namespace, name, spec):
    base = {"image": f"registry.example.com/{name}:1.0.0", "rootUrl": f"https://{name}.example.com",
            "replicas": 2, "mongo": {"external": {"url": {"name": f"{name}-mongo", "key": "MONGO_URL"}}}}
    base.update(spec)
    return {"apiVersion": "meteorfleet.dev/v1alpha1", "kind": "MeteorApp",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-app-{name}", "generation": 1,
                         "resourceVersion": "5", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": base}


def secret(namespace, name, data):
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-secret-{name}", "resourceVersion": "3"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def fleet(namespace="shop"):
    """The MeteorApps of the live test and what their children report: todos: autoscaled 2..8,
    2 app pods ready, 2 proxies ready (Ready); chat: autoscaled 2..6, the autoscaler at 3 wanting
    4, 3 of 4 pods ready (rolling out); news: its Mongo Secret missing (Degraded
    ReferenceNotFound); blog: reading its Secret fails (a reconcile error each pass)."""
    todos = app(namespace, "todos", {"autoscaling": {"minReplicas": 2, "maxReplicas": 8}})
    chat = app(namespace, "chat", {"replicas": 4, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}})
    news = app(namespace, "news", {})
    blog = app(namespace, "blog", {})
    mongo_url = {"MONGO_URL": "mongodb://db-0.db,db-1.db/app?replicaSet=rs0"}
    hpa = autoscaler(chat, current=3, desired=4, cpu=85)
    objects = [
        ("meteorapps", todos), ("meteorapps", chat), ("meteorapps", news), ("meteorapps", blog),
        ("secrets", secret(namespace, "todos-mongo", mongo_url)),
        ("secrets", secret(namespace, "chat-mongo", mongo_url)),
        ("deployments", deployment(todos, "todos", 2, 2, "app")),
        ("deployments", deployment(todos, "todos-proxy", 2, 2, "proxy")),
        ("deployments", deployment(chat, "chat", 4, 3, "app")),
        ("deployments", deployment(chat, "chat-proxy", 2, 2, "proxy")),
        ("horizontalpodautoscalers", autoscaler(todos, current=2, desired=2, cpu=41)),
        ("horizontalpodautoscalers", hpa),
    ]
    return FakeApi(objects, failing={"blog-mongo"})


def autoscaler(app, current, desired, cpu):
    """The HorizontalPodAutoscaler of `app` as its controller reports it."""
    name, namespace = app["metadata"]["name"], app["metadata"]["namespace"]
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-hpa-{name}", "resourceVersion": "12",
                     "labels": {"app.kubernetes.io/managed-by": "meteor-operator"}, "ownerReferences": owned_by(app)},
        "status": {"currentReplicas": current, "desiredReplicas": desired,
                   "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}],
                   "conditions": [{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
                                   "message": "the HPA was able to compute a replica count",
                                   "lastTransitionTime": "2025-01-01T00:00:00Z"},
                                  {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
                                   "message": "ok", "lastTransitionTime": "2025-01-01T00:00:00Z"}]},
    }


if __name__ == "__main__":
    api = fleet()
    host, port = api.serve()
    print(f"fake API server on http://{host}:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        api.stop()
