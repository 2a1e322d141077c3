// A SockJS server (the library under Meteor's DDP stream) that tags every reply with its id.
// Usage: node backend.js ID [PORT]   (PORT 0 or absent: any free port; prints "READY <port>")
// HTTP: /peer/whoami (id + request headers), /peer/sessions (SockJS session ids seen),
//       /peer/health (200), /peer/small (tiny body); every response has X-Backend: ID.
'use strict';
const http = require('http');
const sockjs = require('sockjs');

const id = process.argv[2] || 'backend';
const port = Number(process.argv[3] || 0);
const sessions = new Set();

const service = sockjs.createServer({
  prefix: '/sockjs',
  log: () => {},
  disconnect_delay: 60000,
});
service.on('connection', (conn) => {
  conn.write(JSON.stringify({ backend: id, hello: true }));
  conn.on('data', (message) => conn.write(JSON.stringify({ backend: id, echo: message })));
});

const server = http.createServer((req, res) => {
  res.setHeader('X-Backend', id);
  if (req.url === '/peer/whoami') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ backend: id, headers: req.headers }));
  } else if (req.url === '/peer/sessions') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ backend: id, sessions: [...sessions] }));
  } else if (req.url === '/peer/health' || req.url === '/') {
    res.end('ok');
  } else if (req.url === '/peer/small') {
    res.end(id);
  } else {
    res.statusCode = 404;
    res.end('not found');
  }
});
service.installHandlers(server, { prefix: '/sockjs' });

// Record SockJS session ids before sockjs handles the request, and tag its replies.
const record = (req) => {
  const m = /^\/sockjs\/[^/]+\/([^/.]+)\/[a-z_]+/.exec(req.url);
  if (m) sessions.add(m[1]);
};
server.prependListener('request', (req, res) => {
  record(req);
  res.setHeader('X-Backend', id);
});
server.prependListener('upgrade', record);
server.keepAliveTimeout = 120000;
server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
