// Opens many idle WebSockets through a proxy and reports connect rate and drops.
// Usage: node wsload.js URL COUNT CONCURRENCY
// Prints {"event":"opened", opened, failed, seconds} once all are open (or failed), then waits
// for a line on stdin, and prints {"event":"final", open, closedByBackend: {id: n}} and exits.
// Every backend greets a new WebSocket with {"backend": id, "hello": true}.
'use strict';
const path = require('path');
const WebSocket = require(path.join(__dirname, '../proxy/tests/peers/node_modules/ws'));

const [url, countArg, concurrencyArg] = process.argv.slice(2);
const count = Number(countArg);
const concurrency = Number(concurrencyArg || 200);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

let opened = 0;
let failed = 0;
let open = 0;
const closedByBackend = {};
const openByBackend = {};
let started = 0;
const t0 = process.hrtime.bigint();

function one() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 20000 });
    let backend = null;
    ws.on('message', (data) => {
      if (backend !== null) return;
      backend = JSON.parse(String(data)).backend;
      opened += 1;
      open += 1;
      openByBackend[backend] = (openByBackend[backend] || 0) + 1;
      resolve();
    });
    ws.on('close', () => {
      if (backend === null) { failed += 1; resolve(); return; }
      open -= 1;
      closedByBackend[backend] = (closedByBackend[backend] || 0) + 1;
    });
    ws.on('error', () => { /* close follows */ });
  });
}

async function worker() {
  while (started < count) {
    started += 1;
    await one();
  }
}

Promise.all(Array.from({ length: concurrency }, worker)).then(() => {
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  out({ event: 'opened', opened, failed, seconds, openByBackend });
  process.stdin.once('data', () => {
    out({ event: 'final', open, closedByBackend });
    process.exit(0);
  });
});
