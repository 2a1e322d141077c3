// Test clients for the proxy: sockjs-client forcing one transport, and raw WebSockets.
// Usage: node client.js MODE 'JSON-CONFIG'; prints results as JSON lines on stdout.
//   sessions {url, transports, perTransport, messages}: opens sessions, sends messages, prints
//            {transport, session, backends: [ids seen], replies, error} per session.
//   failover {url, transport, reconnects}: prints {event: "connected"|"echo"|"closed", backend}
//            and reconnects after every close, up to `reconnects` times.
//   ws {url, count, hold}: opens raw WebSockets, each sends "ping" and prints
//            {event: "echo", backend}; keeps them `hold` ms, then prints {event: "done", open}.
//   get {url}: one GET (https certificates not verified), prints {status, headers, body}.
//   browsers {ws, count, sockjs, polling, interval, duration}: `count` raw WebSockets that keep
//            the sticky cookie like a browser and reconnect 10 ms after a close (Meteor's first
//            retry), plus `polling` cookie-less SockJS xhr-polling sessions; every `interval` ms
//            each sends a message and checks the echo comes from its backend. Prints
//            {event: "connected"|"closed", client, backend, t} (t: ms clock), "misrouted" on a
//            wrong echo, and after `duration` ms one {event: "polling", backends, replies,
//            closed} per polling session, then {event: "done"}.
'use strict';
const SockJS = require('sockjs-client');
const WebSocket = require('ws');

const [mode, raw] = process.argv.slice(2);
const config = JSON.parse(raw || '{}');
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function session(url, transport, messages) {
  return new Promise((resolve) => {
    const sessionId = Math.random().toString(36).slice(2, 12);
    const sock = new SockJS(url, null, {
      transports: [transport], timeout: 5000, sessionId: () => sessionId,
    });
    const backends = new Set();
    let replies = 0;
    let sent = 0;
    const timer = setTimeout(() => finish('timeout'), 15000);
    const finish = (error) => {
      clearTimeout(timer);
      try { sock.close(); } catch (_) { /* already closed */ }
      resolve({ transport, session: sessionId, backends: [...backends], replies, error });
    };
    sock.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      backends.add(msg.backend);
      replies += 1;
      if (sent < messages) {
        sent += 1;
        setTimeout(() => sock.send(`m${sent}`), 20);
      } else if (replies > messages) {
        finish(null);
      }
    };
    sock.onclose = (e) => { if (replies <= messages) finish(`closed ${e.code} ${e.reason}`); };
  });
}

async function sessions() {
  const jobs = [];
  for (const t of config.transports) {
    for (let i = 0; i < config.perTransport; i++) jobs.push(session(config.url, t, config.messages));
  }
  for (const result of await Promise.all(jobs)) out(result);
}

async function failover() {
  for (let attempt = 0; attempt <= config.reconnects; attempt++) {
    await new Promise((resolve) => {
      const sock = new SockJS(config.url, null, { transports: [config.transport], timeout: 5000 });
      let backend = null;
      let timer = null;
      sock.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        backend = msg.backend;
        if (msg.hello) {
          out({ event: 'connected', backend });
          sock.send('ping');
        } else {
          out({ event: 'echo', backend });
          // Keep the session busy so a dead backend is noticed quickly.
          timer = setTimeout(() => { try { sock.send('ping'); } catch (_) { /* closed */ } }, 300);
        }
      };
      sock.onclose = (e) => {
        clearTimeout(timer);
        out({ event: 'closed', backend, code: e.code });
        setTimeout(resolve, 200);
      };
    });
  }
}

async function ws() {
  const sockets = [];
  let open = 0;
  await Promise.all(Array.from({ length: config.count }, () => new Promise((resolve) => {
    const s = new WebSocket(config.url, config.options || {});
    sockets.push(s);
    s.on('open', () => { open += 1; s.send('ping'); });
    s.on('message', (data) => {
      const msg = JSON.parse(String(data));
      if (!msg.hello) { out({ event: 'echo', backend: msg.backend }); resolve(); }
    });
    s.on('close', () => { open -= 1; resolve(); });
    s.on('error', (e) => { out({ event: 'error', message: e.message }); resolve(); });
  })));
  await sleep(config.hold || 0);
  out({ event: 'done', open });
  for (const s of sockets) s.terminate();
}

async function get() {
  const lib = config.url.startsWith('https:') ? require('https') : require('http');
  await new Promise((resolve, reject) => {
    const req = lib.get(config.url, { rejectUnauthorized: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => { out({ status: res.statusCode, headers: res.headers, body }); resolve(); });
    });
    req.on('error', reject);
  });
}

function browser(i, jar = null) {
  const headers = jar ? { Cookie: jar } : {};
  const s = new WebSocket(config.ws, { headers, perMessageDeflate: false });
  let backend = null;
  let timer = null;
  s.on('upgrade', (res) => {
    const set = [].concat(res.headers['set-cookie'] || []).map((c) => c.split(';')[0]);
    jar = set.find((c) => c.startsWith('meteor-sticky=')) || jar;
  });
  s.on('message', (data) => {
    const msg = JSON.parse(String(data));
    if (msg.hello) {
      backend = msg.backend;
      out({ event: 'connected', client: i, backend, t: Date.now() });
      timer = setInterval(() => s.send('ping'), config.interval);
    } else if (msg.backend !== backend) {
      out({ event: 'misrouted', client: i, backend, echo: msg.backend });
    }
  });
  s.on('close', () => {
    clearInterval(timer);
    out({ event: 'closed', client: i, backend, t: Date.now() });
    if (!stopping) setTimeout(() => browser(i, jar), 10);
  });
  s.on('error', () => { /* close follows */ });
  sockets.push(s);
}

let stopping = false;
const sockets = [];

function polling() {
  const sock = new SockJS(config.sockjs, null, { transports: ['xhr-polling'], timeout: 5000 });
  const result = { event: 'polling', backends: [], replies: 0, closed: null };
  let timer = null;
  sock.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (!result.backends.includes(msg.backend)) result.backends.push(msg.backend);
    result.replies += 1;
    if (msg.hello) timer = setInterval(() => sock.send('ping'), config.interval);
  };
  sock.onclose = (e) => { clearInterval(timer); if (!stopping) result.closed = `${e.code} ${e.reason}`; };
  return { result, close: () => { clearInterval(timer); sock.close(); } };
}

async function browsers() {
  const sessions = Array.from({ length: config.polling || 0 }, polling);
  for (let i = 0; i < config.count; i++) browser(i);
  await sleep(config.duration);
  stopping = true;
  for (const s of sessions) { out(s.result); s.close(); }
  for (const s of sockets) s.terminate();
  out({ event: 'done' });
}

({ sessions, failover, ws, get, browsers }[mode] || (() => { throw new Error(`unknown mode ${mode}`); }))()
  .then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
