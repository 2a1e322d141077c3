// The app pods of the e2e `routing` scenario: a real SockJS server (npm `sockjs`, the library
// under Meteor's DDP stream), as proxy/tests/peers/backend.js but made for a pod: it listens on
// 0.0.0.0:$PORT (set by the operator from spec.port) and names itself after its pod.
//   node backend.js          (image: e2e/routing/Dockerfile)
// Every reply names the process that sent it, so a client can tell where each request went:
//   - every HTTP response has `X-Backend: <pod name>` (os.hostname(), which is the pod's name)
//     and `X-Backend-Instance: <random id of this process>` (a restarted container is another);
//   - every SockJS message is JSON {backend, instance, hello|echo} (hello on connection, then
//     one echo per message received).
// HTTP: /peer/health and / (200 "ok": the MeteorApp's healthCheck.path and the proxy's active
// check), /peer/whoami ({backend, instance, headers}), /peer/sessions (SockJS session ids seen),
// /peer/burn?ms=N (busy-loops the event loop for N ms, at most 1000, then answers {backend,
// instance, burnedMs}: CPU on demand for the `autoscaling` scenario, as a Meteor method would).
'use strict';
const crypto = require('crypto');
const http = require('http');
const os = require('os');
const sockjs = require('sockjs');

const id = process.env.E2E_BACKEND_ID || os.hostname();
const instance = crypto.randomBytes(4).toString('hex');
const port = Number(process.env.PORT || 3000);
// 0.0.0.0 in a pod; E2E_LISTEN_HOST=127.0.0.N runs several on one host (trying the clients).
const host = process.env.E2E_LISTEN_HOST || '0.0.0.0';
const sessions = new Set();

const service = sockjs.createServer({
  prefix: '/sockjs',
  log: () => {},
  // sockjs' default: a session without a poll for 5 s is gone (the e2e clients never resume).
  disconnect_delay: 5000,
});
service.on('connection', (conn) => {
  conn.write(JSON.stringify({ backend: id, instance, hello: true }));
  conn.on('data', (message) => conn.write(JSON.stringify({ backend: id, instance, echo: message })));
});

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/peer/whoami') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ backend: id, instance, headers: req.headers }));
  } else if (path === '/peer/sessions') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ backend: id, instance, sessions: [...sessions] }));
  } else if (path === '/peer/burn') {
    const asked = Number(new URLSearchParams(req.url.split('?')[1] || '').get('ms'));
    const ms = Number.isFinite(asked) ? Math.min(Math.max(asked, 0), 1000) : 0;
    const until = process.hrtime.bigint() + BigInt(Math.round(ms * 1e6));
    while (process.hrtime.bigint() < until) {
      // Busy: one core, like a Meteor process computing.
    }
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ backend: id, instance, burnedMs: ms }));
  } else if (path === '/peer/health' || path === '/') {
    res.end('ok');
  } else {
    res.statusCode = 404;
    res.end('not found');
  }
});
service.installHandlers(server, { prefix: '/sockjs' });

// Tag every response (sockjs' own too) and record SockJS session ids before sockjs sees them.
const record = (req) => {
  const m = /^\/sockjs\/[^/]+\/([^/.]+)\/[a-z_]+/.exec(req.url);
  if (m) sessions.add(m[1]);
};
server.prependListener('request', (req, res) => {
  record(req);
  res.setHeader('X-Backend', id);
  res.setHeader('X-Backend-Instance', instance);
});
server.prependListener('upgrade', record);
// Above the proxy's --upstream-idle-timeout (4 s), as Node's own default of 5 s is.
server.keepAliveTimeout = 120000;
server.listen(port, host, () => {
  console.log(`READY ${id} ${instance} port ${port}`);
});
// Like a Meteor process: SIGTERM (after the pod's preStop drain) ends it at once.
process.on('SIGTERM', () => {
  console.log(`SIGTERM ${id} ${instance}: ${sessions.size} SockJS sessions seen`);
  process.exit(0);
});
