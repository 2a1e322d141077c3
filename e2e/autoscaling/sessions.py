#!/usr/bin/env python3
"""Long-lived WebSocket sessions of the e2e `autoscaling` scenario, held open unevenly.

    python3 sessions.py 'JSON-CONFIG'

config: {"proxies": {"A": "http://127.0.0.1:P", "B": ...}, "plan": {"POD": COUNT, ...},
         "stopFile": PATH, "maxSeconds": N, "pingSeconds": 15, "reconnect": true}

Talks to the proxy replicas through `kubectl port-forward` (the URLs above), standard library
only. For every pod of the plan it first gets the proxy's sticky cookie naming that pod (plain
GETs of /peer/whoami without a cookie, spread by the proxy's least-connections choice, until a
reply's X-Backend is that pod), then opens COUNT raw SockJS WebSockets (`/sockjs/websocket`)
with that cookie, alternating the proxy replicas (the cookie key is shared, so every replica
pins them alike). The first message of each (the backend's hello) names the pod it reached; a
session pinned to another pod than its cookie names is an error. Each session sends a message
every pingSeconds and reads the echo, so no idle timeout ends it. When one ends (a scale-down
drains its pod), it reconnects with its cookie, as a browser would, unless reconnect is false.
Runs until stopFile exists or maxSeconds; then closes all.

Prints JSON lines on stdout, times in seconds since the epoch (this host's clock):
  {"event": "cookie", "pod", "requests"}              a cookie for that pod
  {"event": "open", "session", "want", "backend", "via", "t"}
  {"event": "closed", "session", "backend", "t", "why"}
  {"event": "ready", "t", "open": {pod: sessions}}    every planned session open
  {"event": "error", "message"}                       and exit status 1
  {"event": "end", "t", "open": {pod: sessions}}
"""
import base64
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

CONFIG = json.loads(sys.argv[1])
PROXIES = CONFIG["proxies"]
PING_SECONDS = float(CONFIG.get("pingSeconds", 15))
RECONNECT = bool(CONFIG.get("reconnect", True))
DEADLINE = time.time() + float(CONFIG.get("maxSeconds", 900))
STOP_FILE = CONFIG["stopFile"]

_print_lock = threading.Lock()
_stop = threading.Event()


def out(**fields):
    with _print_lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def fail(message):
    out(event="error", message=message)
    _stop.set()
    sys.exit(1)


def get_whoami(base):
    """One GET /peer/whoami without a cookie: (X-Backend, the cookie pair it set or None)."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("GET", "/peer/whoami")
        res = conn.getresponse()
        res.read()
        cookies = [v.split(";", 1)[0].strip() for k, v in res.getheaders() if k.lower() == "set-cookie"]
        return res.getheader("X-Backend"), (cookies[0] if cookies else None)
    finally:
        conn.close()


def cookies_for(pods, base, attempts):
    found, requests = {}, 0
    while len(found) < len(pods) and requests < attempts:
        requests += 1
        try:
            backend, cookie = get_whoami(base)
        except OSError as e:
            fail("GET %s/peer/whoami: %s" % (base, e))
        if backend in pods and backend not in found and cookie:
            found[backend] = cookie
            out(event="cookie", pod=backend, requests=requests)
    missing = sorted(set(pods) - set(found))
    if missing:
        fail("no sticky cookie naming %s in %d GETs of %s/peer/whoami (the proxy does not route to it?)"
             % (", ".join(missing), requests, base))
    return found


class WebSocket:
    """A client WebSocket (RFC 6455) on a plain socket: text frames out (masked), frames in."""

    def __init__(self, base, path, cookie):
        url = urllib.parse.urlsplit(base)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        head = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nCookie: %s\r\n\r\n"
                % (path, url.netloc, key, cookie))
        self.sock.sendall(head.encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("connection closed during the handshake")
            self.buf += chunk
            if len(self.buf) > 65536:
                raise OSError("no end of the handshake answer")
        end = self.buf.index(b"\r\n\r\n")
        lines = bytes(self.buf[:end]).decode(errors="replace").split("\r\n")
        del self.buf[:end + 4]
        if " 101 " not in lines[0] + " ":
            raise OSError("handshake answered %r" % lines[0])
        # A new sticky cookie (the old one named a pod that is gone): kept, as a browser would.
        self.set_cookie = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "set-cookie":
                self.set_cookie = value.split(";", 1)[0].strip()

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _frame(self):
        """(opcode, payload) of a complete frame at the head of the buffer, or None."""
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = int.from_bytes(b[2:10], "big"), 10
        masked = b[1] & 0x80
        if masked:
            at += 4
        if len(b) < at + n:
            return None
        payload = bytes(b[at:at + n])
        if masked:
            key = b[at - 4:at]
            payload = bytes(x ^ key[i % 4] for i, x in enumerate(payload))
        opcode = b[0] & 0x0F
        del b[:at + n]
        return opcode, payload

    def recv(self, timeout):
        """The next data frame's payload; None on timeout; raises EOFError when the peer closed."""
        while True:
            frame = self._frame()
            if frame:
                opcode, payload = frame
                if opcode == 0x8:
                    try:
                        self.send(0x8, payload[:2])
                    except OSError:
                        pass
                    raise EOFError("close frame %s" % (int.from_bytes(payload[:2], "big") if len(payload) >= 2 else ""))
                if opcode == 0x9:
                    self.send(0xA, payload)
                    continue
                if opcode in (0x1, 0x2, 0x0):
                    return payload
                continue
            self.sock.settimeout(timeout)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def close(self):
        try:
            self.send(0x8, (1000).to_bytes(2, "big"))
        except OSError:
            pass
        self.sock.close()


class Session(threading.Thread):
    def __init__(self, name, want, via, cookie, first_open):
        super().__init__(daemon=True)
        self.name_, self.want, self.via, self.cookie = name, want, via, cookie
        self.first_open = first_open  # set once the first connection got its hello (or failed)
        self.backend = None
        self.error = None

    def connect(self):
        ws = WebSocket(PROXIES[self.via], "/sockjs/websocket", self.cookie)
        if ws.set_cookie:
            self.cookie = ws.set_cookie
        hello = ws.recv(10)
        if hello is None:
            ws.close()
            raise OSError("no hello within 10 s")
        self.backend = json.loads(hello.decode())["backend"]
        out(event="open", session=self.name_, want=self.want, backend=self.backend, via=self.via, t=time.time())
        return ws

    def run(self):
        first = True
        while not _stop.is_set():
            try:
                ws = self.connect()
            except (OSError, ValueError, KeyError, EOFError) as e:
                if first:
                    self.error = "%s via %s: %s" % (self.name_, self.via, e)
                    self.first_open.set()
                    return
                time.sleep(2)
                continue
            if first:
                first = False
                self.first_open.set()
            why = self.hold(ws)
            out(event="closed", session=self.name_, backend=self.backend, t=time.time(), why=why)
            if not RECONNECT or _stop.is_set():
                return
            time.sleep(1)

    def hold(self, ws):
        next_ping = time.time() + PING_SECONDS
        try:
            while not _stop.is_set():
                if time.time() >= next_ping:
                    ws.send(0x1, b"ping")
                    next_ping = time.time() + PING_SECONDS
                ws.recv(1)
            ws.close()
            return "stopped"
        except (OSError, EOFError) as e:
            ws.sock.close()
            return str(e) or type(e).__name__


def open_counts(sessions):
    counts = {}
    for s in sessions:
        if s.is_alive() and s.backend:
            counts[s.backend] = counts.get(s.backend, 0) + 1
    return counts


def main():
    plan = CONFIG["plan"]
    vias = sorted(PROXIES)
    cookies = cookies_for(set(plan), PROXIES[vias[0]], 40 * max(1, len(plan)))
    sessions, n = [], 0
    for pod in sorted(plan):
        for i in range(int(plan[pod])):
            started = threading.Event()
            s = Session("%s#%d" % (pod, i + 1), pod, vias[n % len(vias)], cookies[pod], started)
            n += 1
            s.start()
            if not started.wait(20) or s.error:
                fail("session %s did not open: %s" % (s.name_, s.error or "no answer within 20 s"))
            if s.backend != pod:
                fail("session %s, pinned by the cookie naming %s, reached %s" % (s.name_, pod, s.backend))
            sessions.append(s)
    out(event="ready", t=time.time(), open=open_counts(sessions))
    while not os.path.exists(STOP_FILE) and time.time() < DEADLINE:
        time.sleep(0.5)
    counts = open_counts(sessions)
    _stop.set()
    deadline = time.time() + 10
    for s in sessions:
        s.join(max(0.0, deadline - time.time()))
    out(event="end", t=time.time(), open=counts)


if __name__ == "__main__":
    main()
