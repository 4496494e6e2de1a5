// Load generator for the side-by-side benchmarks: the same client workload against any
// Durable Streams server. Usage: node load.mjs <scenario> <baseUrl> [json options]
// Prints one JSON object with the scenario's figures on stdout.
import http from "node:http";
import { performance } from "node:perf_hooks";

const [, , scenario, baseUrl, rawOptions] = process.argv;
const options = rawOptions ? JSON.parse(rawOptions) : {};
const base = new URL(baseUrl);
const agent = new http.Agent({ keepAlive: true, maxSockets: 4096 });
const runId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

function request(method, path, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: base.hostname, port: base.port, method, path: `/v1/stream/${path}`, headers, agent },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

async function create(path, contentType = "application/json") {
  const res = await request("PUT", path, { headers: { "content-type": contentType } });
  if (res.status !== 201 && res.status !== 200) throw new Error(`PUT ${path}: ${res.status}`);
}

function message(i) {
  return JSON.stringify({ id: i, kind: "token", text: "lorem ipsum dolor sit amet ".repeat(3) });
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)];
}

// N producers, each POSTing one message per request (or a JSON array of `batch` messages),
// on distinct streams or all on one stream, for `seconds`.
async function appends({ producers = 16, seconds = 5, sameStream = false, batch = 1, warmup = 1 }) {
  const paths = Array.from({ length: producers }, (_, i) => `bench-${runId}-${sameStream ? 0 : i}`);
  for (const path of new Set(paths)) await create(path);
  const body = batch === 1 ? message(0) : JSON.stringify(Array.from({ length: batch }, (_, i) => JSON.parse(message(i))));
  let counting = false;
  let stop = false;
  let done = 0;
  let failed = 0;
  const workers = paths.map(async (path) => {
    while (!stop) {
      let ok = false;
      try {
        const res = await request("POST", path, { headers: { "content-type": "application/json" }, body });
        ok = res.status === 204 || res.status === 200;
      } catch {
        // A refused or reset connection is a failed append, not the end of the run.
      }
      if (counting) {
        if (ok) done++;
        else failed++;
      }
    }
  });
  await new Promise((r) => setTimeout(r, warmup * 1000));
  counting = true;
  const started = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  counting = false;
  const elapsed = (performance.now() - started) / 1000;
  stop = true;
  await Promise.all(workers);
  return { requests_per_s: done / elapsed, messages_per_s: (done * batch) / elapsed, failed };
}

// One long-poll reader at the tail, one writer: time from sending the append to receiving it.
async function longPollLatency({ rounds = 200 }) {
  const path = `bench-lp-${runId}`;
  await create(path);
  let offset = (await request("GET", `${path}?offset=now`)).headers["stream-next-offset"];
  const latencies = [];
  for (let i = 0; i < rounds; i++) {
    const poll = request("GET", `${path}?offset=${offset}&live=long-poll`);
    await new Promise((r) => setTimeout(r, 5));
    const sent = performance.now();
    const append = request("POST", path, { headers: { "content-type": "application/json" }, body: message(i) });
    const res = await poll;
    const received = performance.now();
    await append;
    if (res.status !== 200) throw new Error(`long-poll answered ${res.status}`);
    latencies.push(received - sent);
    offset = res.headers["stream-next-offset"];
  }
  latencies.sort((a, b) => a - b);
  return { p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99), rounds };
}

// SSE fan-out: `subscribers` SSE readers on one stream, one writer at `rate` appends/s.
// Fails if the subscribers are not all connected within `readyTimeout` seconds.
async function sseFanout({ subscribers = 200, rate = 50, seconds = 10, readyTimeout = 30 }) {
  const path = `bench-sse-${runId}`;
  await create(path);
  const offset = (await request("GET", `${path}?offset=now`)).headers["stream-next-offset"];
  const total = Math.round(rate * seconds);
  const sentAt = new Map();
  const latencies = [];
  let delivered = 0;
  let ready = 0;
  const readers = [];
  const subscriberAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const allReady = new Promise((resolveReady) => {
    for (let s = 0; s < subscribers; s++) {
      readers.push(new Promise((resolve) => {
        const seen = new Set();
        const req = http.get(
          { host: base.hostname, port: base.port, path: `/v1/stream/${path}?offset=${offset}&live=sse`, agent: subscriberAgent },
          (res) => {
            res.setEncoding("utf8");
            let buffer = "";
            let counted = false;
            res.on("data", (chunk) => {
              buffer += chunk;
              let cut;
              while ((cut = buffer.indexOf("\n\n")) >= 0) {
                const block = buffer.slice(0, cut);
                buffer = buffer.slice(cut + 2);
                if (!counted && block.startsWith("event: control")) {
                  counted = true;
                  if (++ready === subscribers) resolveReady();
                }
                if (!block.startsWith("event: data")) continue;
                const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
                const now = performance.now();
                for (const msg of JSON.parse(data)) {
                  if (seen.has(msg.id)) continue;
                  seen.add(msg.id);
                  delivered++;
                  latencies.push(now - sentAt.get(msg.id));
                }
                if (seen.size >= total) { req.destroy(); resolve(); }
              }
            });
            res.on("end", resolve);
            res.on("error", resolve);
          },
        );
        req.on("error", resolve);
      }));
    }
  });
  // Every subscriber must be connected (it has seen its first control event) before writing.
  let readyTimer;
  const timedOut = new Promise((_, reject) => {
    readyTimer = setTimeout(
      () => reject(new Error(`only ${ready} of ${subscribers} SSE subscribers connected`)),
      readyTimeout * 1000,
    );
  });
  await Promise.race([allReady, timedOut]);
  clearTimeout(readyTimer);
  const interval = 1000 / rate;
  const start = performance.now();
  const writes = [];
  for (let i = 0; i < total; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    sentAt.set(i, performance.now());
    writes.push(request("POST", path, { headers: { "content-type": "application/json" }, body: JSON.stringify({ id: i }) }));
  }
  await Promise.all(writes);
  await Promise.race([Promise.all(readers), new Promise((r) => setTimeout(r, 5000))]);
  latencies.sort((a, b) => a - b);
  subscriberAgent.destroy();
  return {
    p50_ms: percentile(latencies, 50),
    p99_ms: percentile(latencies, 99),
    delivered_fraction: delivered / (total * subscribers),
  };
}

// Catch-up: a stream of `messages` single-message appends, read from the start to the end by
// `readers` concurrent readers, again and again for `seconds`.
async function catchUp({ messages = 5000, readers = 4, seconds = 5 }) {
  const path = `bench-catchup-${runId}`;
  await create(path);
  const writers = 16;
  let next = 0;
  await Promise.all(Array.from({ length: writers }, async () => {
    while (next < messages) {
      const i = next++;
      const res = await request("POST", path, { headers: { "content-type": "application/json" }, body: message(i) });
      if (res.status !== 204 && res.status !== 200) throw new Error(`catch-up append answered ${res.status}`);
    }
  }));
  let count = 0;
  let reads = 0;
  let stop = false;
  const started = performance.now();
  await Promise.all(Array.from({ length: readers }, async () => {
    while (!stop) {
      let offset = "-1";
      let got = 0;
      for (;;) {
        const res = await request("GET", `${path}?offset=${offset}`);
        reads++;
        got += JSON.parse(res.body).length;
        offset = res.headers["stream-next-offset"];
        if (res.headers["stream-up-to-date"] === "true") break;
      }
      if (got !== messages) throw new Error(`catch-up read ${got} of ${messages} messages`);
      count += got;
      if (performance.now() - started > seconds * 1000) stop = true;
    }
  }));
  const elapsed = (performance.now() - started) / 1000;
  return { messages_per_s: count / elapsed, requests: reads };
}

const scenarios = { appends, "long-poll": longPollLatency, "sse-fanout": sseFanout, "catch-up": catchUp };
const fn = scenarios[scenario];
if (!fn) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const result = await fn(options);
agent.destroy();
console.log(JSON.stringify(result));
process.exit(0);
