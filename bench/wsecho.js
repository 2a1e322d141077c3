// Bench-only WebSocket backend for the message phase: echoes every message unchanged.
// Usage: node wsecho.js ID PORT
// A new WebSocket (any path) is greeted with {"backend": ID, "hello": true}, as backend.js does;
// HTTP GET /peer/health answers 200 for the proxies' health checks. Plain `ws` rather than
// SockJS so that the backend, not the proxy, is the cheap side of each message.
'use strict';
const http = require('http');
const path = require('path');
const WebSocket = require(path.join(__dirname, '../proxy/tests/peers/node_modules/ws'));

const [id, port] = process.argv.slice(2);
const hello = JSON.stringify({ backend: id, hello: true });

const server = http.createServer((req, res) => {
  res.setHeader('X-Backend', id);
  res.end('ok');
});
const wss = new WebSocket.Server({ server, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.send(hello);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.keepAliveTimeout = 120000;
server.listen(Number(port), '127.0.0.1', () => console.log(`READY ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
