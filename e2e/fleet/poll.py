"""Polls a fleet-wide change (e2e/run.sh, fleet_change): every 2 s, each fleet MeteorApp and app
Deployment. Records when each app's status.observedGeneration first reached 2 (seen.json), and a
progress line per poll. Exits 0 once every app is observed, on the new image and Ready; 1 after
900 s.
Usage: poll.py NAMESPACE N IMAGE OUT_DIR"""

import json
import subprocess
import sys
import time


def listed(namespace, *args):
    result = subprocess.run(["kubectl", "-n", namespace, "get", *args, "-o", "json"],
                            capture_output=True, check=True, timeout=30)
    return json.loads(result.stdout)["items"]


def ready(app):
    status = app.get("status") or {}
    return status.get("observedGeneration") == app["metadata"].get("generation") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def main():
    namespace, n, image, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    seen, started = {}, time.time()
    deadline = started + 900
    while time.time() < deadline:
        now = time.time()
        try:
            apps = listed(namespace, "meteorapps", "-l", "e2e-fleet=fleet")
            deployments = listed(namespace, "deployments", "-l", "app.kubernetes.io/component=app")
        except (subprocess.SubprocessError, ValueError, KeyError) as error:
            print("poll failed:", error, file=sys.stderr)
            time.sleep(2)
            continue
        for app in apps:
            status = app.get("status") or {}
            if app["metadata"].get("generation", 0) >= 2 and (status.get("observedGeneration") or 0) >= 2:
                seen.setdefault(app["metadata"]["name"], now)
        settled = sum(1 for app in apps if ready(app))
        new = sum(1 for d in deployments if d["metadata"]["name"].startswith("fleet-")
                  and d["spec"]["template"]["spec"]["containers"][0]["image"] == image)
        with open(out + "/progress", "a") as f:
            f.write(f"{now - started:.0f} s: observed {len(seen)}, Deployments on the new image {new}, Ready {settled}\n")
        with open(out + "/seen.json", "w") as f:
            json.dump(seen, f)
        if len(seen) == n and new == n and settled == n:
            with open(out + "/done", "w") as f:
                f.write(f"{now}\n")
            return 0
        time.sleep(2)
    return 1


if __name__ == "__main__":
    sys.exit(main())
