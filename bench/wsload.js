// Opens many WebSockets through a proxy; reports connect rate, drops and (optionally) messages/s.
// Usage: node wsload.js URL COUNT CONCURRENCY [MESSAGE_SECONDS]
// URL may be ws:// or wss:// (certificates are not verified: the bench uses a test certificate).
// Prints {"event":"opened", opened, failed, seconds} once all are open (or failed). Then, with
// MESSAGE_SECONDS, waits for a line on stdin and runs the message exchange: every socket sends a
// DDP-sized message and the next one as soon as its echo arrives, for MESSAGE_SECONDS; prints
// {"event":"messages", messages, seconds} (echoes received in that window). Finally it waits for
// a line on stdin, prints {"event":"final", open, closedByBackend: {id: n}} and exits.
// Every backend greets a new WebSocket with {"backend": id, "hello": true}.
'use strict';
const path = require('path');
const readline = require('readline');
const WebSocket = require(path.join(__dirname, '../proxy/tests/peers/node_modules/ws'));

const [url, countArg, concurrencyArg, messageSecondsArg] = process.argv.slice(2);
const count = Number(countArg);
const concurrency = Number(concurrencyArg || 200);
const messageSeconds = Number(messageSecondsArg || 0);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
// A Meteor method call as DDP sends it (about 120 bytes).
const ddp = JSON.stringify({
  msg: 'method', id: '42', method: 'tasks.setChecked',
  params: ['a8Fk3LmQ9xTz2Pq1', true], randomSeed: 'e8b1f6a3c2d4b5a6f7e8',
});

let opened = 0;
let failed = 0;
let open = 0;
const closedByBackend = {};
const openByBackend = {};
const sockets = [];
let started = 0;
const t0 = process.hrtime.bigint();

// Message exchange state: echoes counted while `exchanging`.
let exchanging = false;
let echoes = 0;

function one() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: false, handshakeTimeout: 20000, rejectUnauthorized: false,
    });
    let backend = null;
    ws.on('message', (data) => {
      if (backend !== null) {
        if (exchanging) {
          echoes += 1;
          ws.send(ddp);
        }
        return;
      }
      backend = JSON.parse(String(data)).backend;
      opened += 1;
      open += 1;
      openByBackend[backend] = (openByBackend[backend] || 0) + 1;
      sockets.push(ws);
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

// Lines of stdin, kept until asked for (one may arrive before its reader waits).
const lines = [];
const readers = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (readers.length) readers.shift()(line); else lines.push(line);
});
const nextLine = () => new Promise((resolve) => {
  if (lines.length) resolve(lines.shift()); else readers.push(resolve);
});

function exchange() {
  return new Promise((resolve) => {
    exchanging = true;
    const start = process.hrtime.bigint();
    for (const ws of sockets) ws.send(ddp);
    setTimeout(() => {
      exchanging = false;
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      resolve({ messages: echoes, seconds });
    }, messageSeconds * 1000);
  });
}

(async () => {
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  out({ event: 'opened', opened, failed, seconds, openByBackend });
  if (messageSeconds > 0) {
    await nextLine();
    out({ event: 'messages', ...(await exchange()) });
  }
  await nextLine();
  out({ event: 'final', open, closedByBackend });
  process.exit(0);
})();
