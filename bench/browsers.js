// Browser-like WebSocket clients for the autoscaling scenario: each keeps the sticky cookie it
// was given or set, and reconnects 10 ms after a close (Meteor's first retry) through a random
// proxy replica (as a Service would pick one), with its cookie.
// Usage: node browsers.js 'CONFIG-JSON'
//   {urls: [ws URL of each replica], groups: [{count, cookie}], pingMs, concurrency}
//   cookie: "meteor-sticky=..." or null (the proxy then sets one).
// Prints {"event":"opened", opened, failed} once every socket of every group is open. Then, per
// line on stdin: "stats" prints {"event":"stats", open, byBackend, closes, misrouted, failed},
// `closes` being [ms clock, backend, client] of every close since the previous "stats";
// "quit" exits.
// Every socket pings every pingMs; an echo from another backend than its greeting is misrouted.
'use strict';
const path = require('path');
const readline = require('readline');
const WebSocket = require(path.join(__dirname, '../proxy/tests/peers/node_modules/ws'));

const config = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

let open = 0;
let failed = 0;
let misrouted = 0;
let closes = [];
const byBackend = {};

// One browser: connects, and reconnects after every close. `opened` runs once, first open.
function browser(id, cookie, opened) {
  let jar = cookie;
  const connect = () => {
    const url = config.urls[Math.floor(Math.random() * config.urls.length)];
    const ws = new WebSocket(url, {
      headers: jar ? { Cookie: jar } : {}, perMessageDeflate: false, handshakeTimeout: 20000,
    });
    let backend = null;
    let timer = null;
    ws.on('upgrade', (res) => {
      const set = [].concat(res.headers['set-cookie'] || []).map((c) => c.split(';')[0]);
      jar = set.find((c) => c.startsWith('meteor-sticky=')) || jar;
    });
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      if (backend === null) {
        backend = msg.backend;
        open += 1;
        byBackend[backend] = (byBackend[backend] || 0) + 1;
        timer = setInterval(() => ws.send('ping'), config.pingMs);
        if (opened) { opened(); opened = null; }
      } else if (msg.backend !== backend) {
        misrouted += 1;
      }
    });
    ws.on('close', () => {
      clearInterval(timer);
      if (backend === null) {
        failed += 1;
      } else {
        open -= 1;
        byBackend[backend] -= 1;
        closes.push([Date.now(), backend, id]);
      }
      setTimeout(connect, 10);
    });
    ws.on('error', () => { /* close follows */ });
  };
  connect();
}

(async () => {
  const cookies = config.groups.flatMap((g) => Array(g.count).fill(g.cookie));
  let next = 0;
  const worker = async () => {
    while (next < cookies.length) {
      const id = next;
      next += 1;
      await new Promise((resolve) => browser(id, cookies[id], resolve));
    }
  };
  await Promise.all(Array.from({ length: config.concurrency || 100 }, worker));
  out({ event: 'opened', opened: open, failed });
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'stats') {
      out({ event: 'stats', open, byBackend, closes, misrouted, failed });
      closes = [];
    } else if (line === 'quit') {
      process.exit(0);
    }
  });
})();
