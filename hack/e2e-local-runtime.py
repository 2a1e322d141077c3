#!/usr/bin/env python3
"""The container runtime of hack/e2e-local.sh: what a pod's container runs on the loopback control
plane. ../shared/cluster/fake_kubelet.py starts it (its --run command) in the pod's network
namespace, once per pod it runs:

    python3 hack/e2e-local-runtime.py --state DIR --pod NAME

DIR is hack/e2e-local.sh's state folder: runtime.json ({"kubectl", "kubeconfig" (the admin
credentials, server reached from the pod network at 10.244.0.1), "logs", "pids", "images"}).
`images` plays the images loaded into the cluster (`kind load docker-image`): image reference ->
{"entrypoint": [...], "cmd": [...], "env": {...}, "workdir": ...} in host terms. The container's
command and args override them as Kubernetes does (command replaces entrypoint and cmd, args
replace cmd).

What it does, as a kubelet and a container runtime would:
  - reads the pod (by name) and its first container;
  - an image that is not loaded never starts: the container status says ErrImagePull (as on kind
    for an image neither loaded nor pullable) and the pod never gets ready;
  - the hostname is the pod's name (a UTS namespace of its own), as in a pod;
  - Secret and ConfigMap volumes are mounted per pod (a tmpfs in this pod's own mount namespace,
    which `ip netns exec` made), so two pods' files at one path never mix;
  - the program runs with the pod's environment (from fake_kubelet.py) over the image's;
    its output goes to LOGS/NAMESPACE.NAME.log (what `kubectl logs` would show), its pid to
    PIDS/NAMESPACE.NAME (for hack/e2e-local-cpu.py);
  - SIGTERM (fake_kubelet.py's, to the whole process group, after the preStop sleep) reaches the
    program directly; this process then only waits for it, so the grace period is the program's;
  - a pod deleted without a grace period (`kubectl delete --force --grace-period=0`), which
    fake_kubelet.py never sees terminating, is noticed here: SIGTERM, and SIGKILL 2 s later (the
    kubelet's minimum grace for a pod removed from the API server);
  - restartPolicy Always: a program that exits is restarted after a back-off (10 s doubling to
    300 s, as CrashLoopBackOff), and the exit is logged loudly (also in LOGS/crashes.log).
"""
import argparse
import base64
import ctypes
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def stamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Runtime:
    def __init__(self, state, pod_name):
        with open(os.path.join(state, "runtime.json")) as f:
            self.cfg = json.load(f)
        self.pod_name = pod_name
        self.terminating = False  # SIGTERM received (the pod is being deleted)
        self.gone = False  # the pod is no longer in the API server
        self.child = None
        self.waiter = None
        self.log = None
        self.pidfile = None

    # --- the API server (kubectl with the admin kubeconfig, through 10.244.0.1) ---------------
    def kubectl(self, *args, stdin=None, timeout=20):
        return subprocess.run([self.cfg["kubectl"], "--kubeconfig", self.cfg["kubeconfig"], "--request-timeout=15s", *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def read_pod(self):
        for attempt in range(20):
            try:
                r = self.kubectl("get", "pods", "--all-namespaces", "--field-selector", "metadata.name=" + self.pod_name, "-o", "json")
                if r.returncode == 0:
                    items = json.loads(r.stdout)["items"]
                    if items:
                        return items[0]
            except (subprocess.TimeoutExpired, ValueError):
                pass
            time.sleep(0.5 + attempt * 0.1)
        return None

    def say(self, message):
        line = "%s [e2e-local runtime] %s\n" % (stamp(), message)
        if self.log:
            self.log.write(line)
            self.log.flush()
        else:
            sys.stderr.write(line)

    # --- the pod's hostname -----------------------------------------------------------------
    def set_hostname(self, pod):
        """A UTS namespace of the pod's own, named as a kubelet names it (spec.hostname, else the
        pod's name, at most 63 characters): os.hostname() in the app is its pod's name."""
        name = (pod["spec"].get("hostname") or pod["metadata"]["name"])[:63].rstrip("-.")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x04000000) != 0:  # CLONE_NEWUTS
            self.say("cannot make a UTS namespace (errno %d): the hostname stays this host's" % ctypes.get_errno())
            return
        socket.sethostname(name)

    # --- volumes ---------------------------------------------------------------------------
    def mount_volumes(self, pod, container):
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        ns = pod["metadata"]["namespace"]
        for m in container.get("volumeMounts") or []:
            v = volumes.get(m["name"]) or {}
            if "secret" in v:
                kind, name, src = "secret", v["secret"].get("secretName"), v["secret"]
            elif "configMap" in v:
                kind, name, src = "configmap", v["configMap"].get("name"), v["configMap"]
            else:
                continue  # emptyDir and the rest: the host folder fake_kubelet.py made
            r = self.kubectl("-n", ns, "get", kind, name, "-o", "json")
            if r.returncode != 0:
                if not src.get("optional"):
                    self.say("volume %s: %s %s/%s not readable: %s" % (m["name"], kind, ns, name, r.stderr.strip()))
                continue
            obj = json.loads(r.stdout)
            files = {k: base64.b64decode(x) for k, x in (obj.get("data") or {}).items()} if kind == "secret" else \
                {**{k: x.encode() for k, x in (obj.get("data") or {}).items()},
                 **{k: base64.b64decode(x) for k, x in (obj.get("binaryData") or {}).items()}}
            if src.get("items"):
                files = {i["path"]: files[i["key"]] for i in src["items"] if i["key"] in files}
            path = m["mountPath"]
            os.makedirs(path, exist_ok=True)
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", path], capture_output=True, text=True)
            if r.returncode != 0:
                self.say("volume %s: cannot mount a tmpfs at %s (%s); using the host folder" % (m["name"], path, r.stderr.strip()))
            mode = src.get("defaultMode", 0o644)
            for key, data in files.items():
                dest = os.path.join(path, key)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(data)
                os.chmod(dest, mode)

    # --- an image that is not loaded --------------------------------------------------------
    def image_missing(self, pod, container):
        ns = pod["metadata"]["namespace"]
        self.say("image %s is not loaded into this cluster (loaded: %s): the container never starts, as with ErrImagePull"
                 % (container["image"], ", ".join(sorted(self.cfg["images"]))))
        # After fake_kubelet.py's own status write (Running, not ready), which it does not repeat
        # while the pod stays unready, say why in the container status, as a kubelet would.
        deadline = time.time() + 20
        while time.time() < deadline and not self.terminating:
            r = self.kubectl("-n", ns, "get", "pod", self.pod_name, "-o", "jsonpath={.status.phase}")
            if r.returncode == 0 and r.stdout == "Running":
                break
            time.sleep(0.5)
        status = {"status": {"containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "", "ready": False, "started": False,
            "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull",
                                                      "message": "image %s is not loaded (hack/e2e-local.sh)" % container["image"]}}}]}}
        r = self.kubectl("-n", ns, "patch", "pod", self.pod_name, "--subresource=status", "--type=merge", "-p", json.dumps(status))
        if r.returncode != 0:
            self.say("cannot write the container status: %s" % r.stderr.strip())
        while not self.terminating and not self.gone:
            time.sleep(0.5)
        self.say("pod deleted; nothing ran")
        return 0

    # --- the deletion watch ------------------------------------------------------------------
    def watch_deletion(self, ns):
        """kubectl wait --for=delete: returns once the pod is gone from the API server."""
        while not self.terminating:
            try:
                self.waiter = subprocess.Popen([self.cfg["kubectl"], "--kubeconfig", self.cfg["kubeconfig"], "-n", ns, "wait",
                                                "--for=delete", "pod/" + self.pod_name, "--timeout=24h"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rc = self.waiter.wait()
            except OSError:
                rc = 1
            if rc == 0 and not self.terminating:
                self.gone = True
                self.say("the pod is gone from the API server without a graceful deletion (forced): SIGTERM, SIGKILL in 2 s")
                child = self.child
                if child and child.poll() is None:
                    try:
                        os.kill(child.pid, signal.SIGTERM)
                        child.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        os.kill(child.pid, signal.SIGKILL)
                    except OSError:
                        pass
                return
            time.sleep(1)

    # --- the program -------------------------------------------------------------------------
    def argv_for(self, container, image):
        if container.get("command"):
            argv = list(container["command"]) + list(container.get("args") or [])
        else:
            argv = list(image.get("entrypoint") or []) + list(container["args"] if "args" in container else image.get("cmd") or [])
        paths = image.get("paths") or {}
        return [paths.get(a, a) for a in argv]

    def run(self):
        pod = self.read_pod()
        if pod is None:
            sys.stderr.write("%s [e2e-local runtime] pod %s not found in the API server\n" % (stamp(), self.pod_name))
            return 1
        ns = pod["metadata"]["namespace"]
        os.makedirs(self.cfg["logs"], exist_ok=True)
        self.log = open(os.path.join(self.cfg["logs"], "%s.%s.log" % (ns, self.pod_name)), "a", buffering=1)
        container = pod["spec"]["containers"][0]
        signal.signal(signal.SIGTERM, self.on_term)
        threading.Thread(target=self.watch_deletion, args=(ns,), daemon=True).start()

        self.set_hostname(pod)
        image = self.cfg["images"].get(container["image"])
        if image is None:
            return self.image_missing(pod, container)
        self.mount_volumes(pod, container)
        argv = self.argv_for(container, image)
        env = dict(image.get("env") or {})
        env.update(os.environ)  # the pod's environment (fake_kubelet.py resolved it) wins
        cwd = container.get("workingDir") or image.get("workdir") or "/"
        restart = pod["spec"].get("restartPolicy", "Always")
        os.makedirs(self.cfg["pids"], exist_ok=True)
        self.pidfile = os.path.join(self.cfg["pids"], "%s.%s" % (ns, self.pod_name))
        backoff, rc = 10, 0
        while True:
            self.say("start (image %s): %s" % (container["image"], " ".join(a if len(a) < 200 else a[:200] + "..." for a in argv)))
            started = time.time()
            try:
                self.child = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
            except OSError as e:
                self.say("cannot start %s: %s" % (argv[0], e))
                return 127
            with open(self.pidfile, "w") as f:
                f.write(str(self.child.pid))
            rc = self.wait_child()
            took = time.time() - started
            if self.terminating or self.gone:
                self.say("exited with %s %.1f s after it started (pod deleted)" % (rc, took))
                break
            if restart == "Never" or (restart == "OnFailure" and rc == 0):
                self.say("exited with %s %.1f s after it started (restartPolicy %s)" % (rc, took, restart))
                break
            if took > 600:
                backoff = 10
            message = "CRASH: pod %s/%s: the program exited with %s after %.1f s; restarting in %d s (CrashLoopBackOff)" % (
                ns, self.pod_name, rc, took, backoff)
            self.say(message)
            with open(os.path.join(self.cfg["logs"], "crashes.log"), "a") as f:
                f.write("%s %s\n" % (stamp(), message))
            deadline = time.time() + backoff
            while time.time() < deadline and not self.terminating and not self.gone:
                time.sleep(0.2)
            if self.terminating or self.gone:
                break
            backoff = min(backoff * 2, 300)
        try:
            os.unlink(self.pidfile)
        except OSError:
            pass
        if self.waiter and self.waiter.poll() is None:
            self.waiter.kill()
        return rc

    def wait_child(self):
        while True:
            try:
                rc = self.child.wait()
                break
            except InterruptedError:
                continue
        # SIGTERM came to the whole process group: let its handler here run before deciding.
        time.sleep(0.2)
        return rc if rc >= 0 else "signal %d" % -rc

    def on_term(self, *_):
        # fake_kubelet.py signals the whole process group, the program included: only remember it.
        if not self.terminating:
            self.terminating = True
            self.say("SIGTERM (pod deletion): waiting for the program to exit")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True)
    ap.add_argument("--pod", required=True)
    a = ap.parse_args()
    rc = Runtime(a.state, a.pod).run()
    sys.exit(rc if isinstance(rc, int) else 1)


if __name__ == "__main__":
    main()
