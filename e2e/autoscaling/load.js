// CPU load of the e2e `autoscaling` scenario. It runs in a pod of the test namespace (image
// E2E_SOCKJS_IMAGE, as `node -e` with this file's text: no image of its own) and sends
// LOAD_CONCURRENCY loops of GET LOAD_URL (the front Service's /peer/burn?ms=N: each request
// busy-loops an app pod for N ms), each loop pausing LOAD_PAUSE_MS between requests. Without a
// cookie, so the proxy spreads them by least connections. Every 10 s it logs a JSON line
// {ok, failed, backends: {pod: requests}}. SIGTERM ends it (it is PID 1: Node's default
// handler would not).
'use strict';
const http = require('http');

const url = process.env.LOAD_URL;
const concurrency = Number(process.env.LOAD_CONCURRENCY || 2);
const pauseMs = Number(process.env.LOAD_PAUSE_MS || 100);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const stats = { ok: 0, failed: 0, backends: {} };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const report = () => console.log(JSON.stringify(stats));

function once() {
  return new Promise((resolve) => {
    const req = http.get(url, { agent, timeout: 10000 }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) {
          stats.ok += 1;
          const backend = res.headers['x-backend'] || '?';
          stats.backends[backend] = (stats.backends[backend] || 0) + 1;
        } else {
          stats.failed += 1;
        }
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => {
      stats.failed += 1;
      resolve();
    });
  });
}

async function loop() {
  for (;;) {
    await once();
    await sleep(pauseMs);
  }
}

process.on('SIGTERM', () => {
  report();
  process.exit(0);
});
setInterval(report, 10000);
console.log(`load: ${concurrency} loops of GET ${url}, ${pauseMs} ms apart`);
for (let i = 0; i < concurrency; i += 1) loop();
