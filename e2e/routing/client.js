// Host-side clients of the e2e `routing` scenario, talking to the proxy replicas through
// `kubectl port-forward`. Needs the Node peers' packages (npm ci in proxy/tests/peers):
// sockjs-client is the real SockJS client, the same the proxy's integration tests use.
// Usage: node client.js MODE 'JSON-CONFIG'; prints JSON lines on stdout.
//   sticky {urls: [A, B], sessions, messages, cookie}: raw SockJS xhr-polling sessions (the
//          protocol spoken by hand, so every HTTP response is seen) whose requests alternate
//          between the proxy replicas A and B, keeping the proxy's cookie like a browser when
//          `cookie` is true. Prints {session, backends, byReplica, requests, error} per session.
//   pin {urls: [A, B], requests}: GET /peer/whoami on A without a cookie, then `requests` GETs
//          alternating A and B with the cookie A set, then `requests` GETs on A without any.
//          Prints {cookie, first, withCookie: [backends], withoutCookie: [backends]}.
//   soak {replicas: {A: url, B: url}, transports: {name: slots}, cross, holdMs, intervalMs,
//          stopFile, maxSeconds}: keeps sessions running until stopFile exists (or maxSeconds):
//          per replica and transport (xhr-polling, websocket) `slots` sockjs-client sessions at
//          a time, plus `cross` raw xhr-polling sessions alternating A and B with the cookie.
//          Each session sends a message every intervalMs and expects its echo, and closes
//          itself after holdMs; then its slot opens a new one. Prints one line per session:
//          {kind, via, session, start, end, backend, backends, replies, foreign, outcome, error}
//          outcome "held" (ran its holdMs) or "ended" (closed, lost or failed before: error says
//          why); foreign lists {t, what} for any sign of a request answered by another backend
//          (a reply or X-Backend from another pod, or SockJS's "Server lost session"). Times are
//          seconds since the epoch (this host's clock).
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const { createRequire } = require('module');

const peers = path.join(__dirname, '..', '..', 'proxy', 'tests', 'peers', 'package.json');
const SockJS = createRequire(peers)('sockjs-client');

const [mode, raw] = process.argv.slice(2);
const config = JSON.parse(raw || '{}');
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now() / 1000;
const randomId = () => Math.random().toString(36).slice(2, 12);
// One keep-alive pool per port-forward, as a browser keeps its connections.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

// request(url, method, body, cookies) -> {status, headers, body}; rejects on a network error or
// after `timeout` ms. `cookies` is a Map name -> value, updated from Set-Cookie.
function request(url, method, body, cookies, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const headers = {};
    if (cookies && cookies.size) {
      headers.Cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    }
    if (body !== undefined) {
      headers['Content-Type'] = 'text/plain;charset=UTF-8';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const req = http.request(url, { method, headers, agent, timeout }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        if (cookies) {
          for (const line of res.headers['set-cookie'] || []) {
            const [pair] = line.split(';');
            const eq = pair.indexOf('=');
            if (eq > 0) cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
          }
        }
        resolve({ status: res.statusCode, headers: res.headers, body: text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeout} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// SockJS frames of an xhr-polling answer: 'o', 'h', 'a[...]' (messages), 'c[code, reason]'.
function frames(text) {
  const msgs = [];
  let type = null;
  for (const line of text.split('\n').filter(Boolean)) {
    type = line[0];
    if (type === 'a') for (const m of JSON.parse(line.slice(1))) msgs.push(JSON.parse(m));
    if (type === 'c') return { type, msgs, close: JSON.parse(line.slice(1)) };
  }
  return { type, msgs };
}

// One raw xhr-polling session over `urls` (requests alternate between them), for at least
// `messages` echoes, or until `until` (seconds since the epoch) when set.
async function rawSession(urls, { messages = 5, until = 0, intervalMs = 0, cookie = true }) {
  const sid = randomId();
  const server = String(100 + Math.floor(Math.random() * 900));
  const url = (i, transport) => `${urls[i % urls.length]}/sockjs/${server}/${sid}/${transport}`;
  const cookies = cookie ? new Map() : null;
  const r = {
    kind: 'xhr-polling across replicas', via: urls.length > 1 ? 'A+B' : 'A', session: sid,
    start: now(), backend: null, backends: [], byReplica: {}, requests: 0, replies: 0,
    foreign: [], error: null,
  };
  const seen = new Set();
  let turn = 0;
  const call = async (transport, body) => {
    const i = turn++;
    const res = await request(url(i, transport), 'POST', body, cookies);
    r.requests += 1;
    const replica = String.fromCharCode(65 + (i % urls.length));
    r.byReplica[replica] = (r.byReplica[replica] || 0) + 1;
    const b = res.headers['x-backend'];
    if (b) {
      seen.add(b);
      if (!r.backend) r.backend = b;
      else if (b !== r.backend) r.foreign.push({ t: now(), what: `${transport} answered by ${b}` });
    }
    return res;
  };
  const poll = async () => {
    for (let beats = 0; beats < 3; beats++) {
      const res = await call('xhr');
      if (res.status !== 200) throw new Error(`xhr: HTTP ${res.status} ${res.body.slice(0, 80)}`);
      const f = frames(res.body);
      if (f.type === 'o') {
        r.foreign.push({ t: now(), what: 'Server lost session (a poll opened a new session)' });
        throw new Error('Server lost session');
      }
      for (const m of f.msgs) {
        seen.add(m.backend);
        if (m.backend !== r.backend) r.foreign.push({ t: now(), what: `message from ${m.backend}` });
      }
      if (f.type === 'c') throw new Error(`closed by the server: ${JSON.stringify(f.close)}`);
      if (f.msgs.length) return f.msgs;
    }
    throw new Error('xhr: only heartbeats');
  };
  try {
    const open = await call('xhr');
    if (open.status !== 200 || frames(open.body).type !== 'o') {
      throw new Error(`open: HTTP ${open.status} ${open.body.slice(0, 80)}`);
    }
    const hello = await poll();
    if (!hello.some((m) => m.hello)) throw new Error('no hello');
    let sent = 0;
    while (until ? now() < until : sent < messages) {
      sent += 1;
      const res = await call('xhr_send', JSON.stringify([`m${sent}`]));
      if (res.status === 404) {
        r.foreign.push({ t: now(), what: 'xhr_send: 404 (the backend does not know the session)' });
        throw new Error('Server lost session (xhr_send 404)');
      }
      if (res.status !== 204) throw new Error(`xhr_send: HTTP ${res.status} ${res.body.slice(0, 80)}`);
      const got = await poll();
      r.replies += got.filter((m) => m.echo !== undefined).length;
      if (intervalMs) await sleep(intervalMs);
    }
  } catch (e) {
    r.error = e.message;
  }
  r.backends = [...seen];
  r.end = now();
  return r;
}

// One sockjs-client session through one replica with one transport, held until `until`.
function clientSession(via, url, transport, until, intervalMs) {
  return new Promise((resolve) => {
    const sid = randomId();
    const r = {
      kind: transport, via, session: sid, start: now(), backend: null, backends: [],
      replies: 0, foreign: [], error: null,
    };
    const seen = new Set();
    let done = false;
    let timer = null;
    let stall = null;
    let sock;
    const finish = (error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(stall);
      r.error = error;
      r.backends = [...seen];
      r.end = now();
      try { sock.close(); } catch (_) { /* closed */ }
      resolve(r);
    };
    // No answer to a message for 10 s: the session is as good as dropped.
    const expect = () => {
      clearTimeout(stall);
      stall = setTimeout(() => finish('no echo within 10 s'), 10000);
    };
    try {
      sock = new SockJS(`${url}/sockjs`, null, { transports: [transport], timeout: 5000, sessionId: () => sid });
    } catch (e) {
      finish(`cannot open: ${e.message}`);
      return;
    }
    expect();
    let sent = 0;
    sock.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      seen.add(msg.backend);
      if (!r.backend) r.backend = msg.backend;
      else if (msg.backend !== r.backend) r.foreign.push({ t: now(), what: `message from ${msg.backend}` });
      if (msg.echo !== undefined) r.replies += 1;
      if (now() >= until) { finish(null); return; }
      expect();
      timer = setTimeout(() => {
        sent += 1;
        try { sock.send(`m${sent}`); } catch (err) { finish(`send: ${err.message}`); }
      }, msg.hello ? 0 : intervalMs);
    };
    sock.onclose = (e) => {
      // What sockjs-client reports when a request reached a backend that does not know the
      // session: a poll opening a new one, or a send answered 404.
      if (e.reason === 'Server lost session' || /http status 404/.test(e.reason || '')) {
        r.foreign.push({ t: now(), what: e.reason });
      }
      finish(`closed ${e.code} ${e.reason}`);
    };
  });
}

async function sticky() {
  const jobs = [];
  for (let i = 0; i < config.sessions; i++) {
    jobs.push(rawSession(config.urls, { messages: config.messages, cookie: config.cookie !== false }));
  }
  for (const r of await Promise.all(jobs)) out(r);
}

async function pin() {
  const [a, b] = config.urls;
  const cookies = new Map();
  const first = await request(`${a}/peer/whoami`, 'GET', undefined, cookies);
  const withCookie = [];
  for (let i = 0; i < config.requests; i++) {
    const res = await request(`${i % 2 ? a : b}/peer/whoami`, 'GET', undefined, cookies);
    withCookie.push(res.headers['x-backend'] || `HTTP ${res.status}`);
  }
  const withoutCookie = [];
  for (let i = 0; i < config.requests; i++) {
    const res = await request(`${a}/peer/whoami`, 'GET', undefined, null);
    withoutCookie.push(res.headers['x-backend'] || `HTTP ${res.status}`);
  }
  out({
    cookie: first.headers['set-cookie'] || [], first: first.headers['x-backend'] || `HTTP ${first.status}`,
    withCookie, withoutCookie,
  });
}

async function soak() {
  const started = now();
  const stopped = () => fs.existsSync(config.stopFile) || now() - started > config.maxSeconds;
  const hold = () => now() + config.holdMs / 1000;
  const slots = [];
  const slot = async (run) => {
    while (!stopped()) {
      let r;
      try {
        r = await run();
      } catch (e) {
        r = { kind: 'client', error: `client failure: ${e.stack}`, start: now(), end: now(), foreign: [] };
      }
      r.outcome = r.error ? 'ended' : 'held';
      out(r);
      // A failing session is retried after a pause, like a SockJS client reconnecting.
      if (r.error) await sleep(500);
    }
  };
  for (const [via, url] of Object.entries(config.replicas)) {
    for (const [transport, count] of Object.entries(config.transports)) {
      for (let i = 0; i < count; i++) {
        slots.push(slot(() => clientSession(via, url, transport, hold(), config.intervalMs)));
      }
    }
  }
  const urls = Object.values(config.replicas);
  for (let i = 0; i < (config.cross || 0); i++) {
    slots.push(slot(() => rawSession(urls, { until: hold(), intervalMs: config.intervalMs, cookie: true })));
  }
  await Promise.all(slots);
}

({ sticky, pin, soak }[mode] || (() => { throw new Error(`unknown mode ${mode}`); }))()
  .then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
