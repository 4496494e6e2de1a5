// Load generator for the side-by-side benchmarks: the same client workload against any
// Durable Streams server. Usage: node load.mjs <scenario> <baseUrl> [json options]
// Prints one JSON object with the scenario's figures on stdout (ws-idle first prints phase
// lines and waits for lines on stdin: see there). The ws-* scenarios are for our server only.
import http from "node:http";
import { performance } from "node:perf_hooks";
import readline from "node:readline";
import WebSocket from "ws";

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

// -- websockets (ws://host/ws/v1/stream/<path>?offset=...) -------------------------------------

// Frames are told apart by their first bytes, without parsing them: the server writes them
// compactly, `{"event":"control",...}`, `{"event":"data","data":[...]}`, `{"event":"ack",...}`.
const CONTROL = Buffer.from('{"event":"control"');
const DATA = Buffer.from('{"event":"data","data":');
const ACK = Buffer.from('{"event":"ack"');
const ERROR = Buffer.from('{"event":"error"');

function startsWith(frame, prefix) {
  return frame.length >= prefix.length && frame.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One websocket following `path` from `offset`; resolves with the socket once its first control
// frame arrives. `onFrame(buffer)` sees every text frame (the control frames too), `onClose(code)`
// a close after that. No permessage-deflate unless `deflate` (the ws package offers it by default).
function subscribe(path, { offset = "now", onFrame, onClose, deflate = false, timeout = 30 } = {}) {
  const url = `ws://${base.host}/ws/v1/stream/${path}?offset=${offset}`;
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { perMessageDeflate: deflate });
    let ready = false;
    const fail = (error) => {
      if (ready) return;
      ready = true; // settled
      clearTimeout(timer);
      socket.terminate();
      reject(error);
    };
    const timer = setTimeout(() => fail(new Error(`no control frame within ${timeout} s`)), timeout * 1000);
    socket.on("message", (frame) => {
      if (!ready && startsWith(frame, CONTROL)) {
        ready = true;
        clearTimeout(timer);
        resolve(socket);
      } else if (!ready && startsWith(frame, ERROR)) {
        fail(new Error(`websocket refused: ${frame}`));
        return;
      }
      if (onFrame) onFrame(frame);
    });
    socket.on("error", fail);
    socket.on("close", (code, reason) => {
      if (!ready) fail(new Error(`websocket closed ${code} ${reason}`));
      else if (onClose) onClose(code);
    });
  });
}

// `count` calls of `open(i)`, at most `concurrency` at a time; their results in order.
async function pool(count, concurrency, open) {
  const out = new Array(count);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(count, concurrency) }, async () => {
    while (next < count) {
      const i = next++;
      out[i] = await open(i);
    }
  }));
  return out;
}

// Close every socket (code 1000) and wait for the closes, at most `seconds`; then cut the rest.
async function closeAll(sockets, seconds = 5) {
  const closed = sockets.map((s) => (s.readyState === WebSocket.CLOSED ? null : new Promise((r) => s.once("close", r))));
  for (const s of sockets) s.close(1000);
  await Promise.race([Promise.all(closed), sleep(seconds * 1000)]);
  for (const s of sockets) s.terminate();
}

// This process's CPU time (user + system) over a wall-clock span, in cores (1 = one core busy).
function cpuMeter() {
  const cpu = process.cpuUsage();
  const wall = performance.now();
  return () => {
    const used = process.cpuUsage(cpu);
    return (used.user + used.system) / 1000 / (performance.now() - wall);
  };
}

// Websocket fan-out: `subscribers` websockets on one stream from offset=now (opened
// `concurrency` at a time, each waiting for its first control frame), then one writer POSTs
// `{"id": i}` at `rate` appends/s for `seconds` without waiting for answers. Latency: from
// sending the POST to a subscriber receiving the message. Every subscriber must get every
// message exactly once: delivered_fraction counts first deliveries, duplicates the others.
async function wsFanout({ subscribers = 1000, rate = 50, seconds = 10, concurrency = 50, drain = 5, deflate = false }) {
  const path = `bench-wsf-${runId}`;
  await create(path);
  const total = Math.round(rate * seconds);
  const sentAt = new Float64Array(total);
  const latencies = new Float64Array(total * subscribers);
  let delivered = 0;
  let duplicates = 0;
  let unknown = 0;
  let errors = 0;
  let complete = 0;
  const closes = {}; // close codes of sockets the server closed before the end
  let closing = false;
  let everyoneDone;
  const allComplete = new Promise((r) => { everyoneDone = r; });
  const opening = performance.now();
  const sockets = await pool(subscribers, concurrency, () => {
    const seen = new Uint8Array(total);
    let got = 0;
    const onFrame = (frame) => {
      if (!startsWith(frame, DATA)) {
        if (startsWith(frame, ERROR)) errors++;
        return;
      }
      const now = performance.now();
      for (const msg of JSON.parse(frame).data) {
        const id = msg.id;
        if (!(id >= 0 && id < total)) unknown++;
        else if (seen[id]) duplicates++;
        else {
          seen[id] = 1;
          latencies[delivered++] = now - sentAt[id];
          if (++got === total && ++complete === subscribers) everyoneDone();
        }
      }
    };
    const onClose = (code) => { if (!closing) closes[code] = (closes[code] || 0) + 1; };
    return subscribe(path, { onFrame, onClose, deflate });
  });
  const connectSeconds = (performance.now() - opening) / 1000;
  const cpu = cpuMeter();
  const interval = 1000 / rate;
  const start = performance.now();
  const writes = [];
  let failed = 0;
  const failures = {}; // why appends failed: status or error code -> count
  const fail = (why) => { failed++; failures[why] = (failures[why] || 0) + 1; };
  for (let i = 0; i < total; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    sentAt[i] = performance.now();
    const body = JSON.stringify({ id: i });
    writes.push(request("POST", path, { headers: { "content-type": "application/json" }, body })
      .then(
        (res) => { if (res.status !== 204 && res.status !== 200) fail(`status ${res.status}`); },
        (err) => { fail(err.code || err.message); },
      ));
  }
  await Promise.all(writes);
  await Promise.race([allComplete, sleep(drain * 1000)]);
  const clientCores = cpu();
  closing = true;
  await closeAll(sockets);
  const sorted = latencies.subarray(0, delivered).sort();
  return {
    p50_ms: percentile(sorted, 50),
    p99_ms: percentile(sorted, 99),
    max_ms: delivered ? sorted[delivered - 1] : null,
    delivered_fraction: delivered / (total * subscribers),
    duplicates,
    unknown,
    error_frames: errors,
    closed_early: closes,
    failed,
    failures,
    subscribers,
    messages: total,
    connect_s: connectSeconds,
    client_cpu_cores: clientCores,
  };
}

// Websocket appends: `connections` websockets, each on its own stream, each keeping `inFlight`
// append frames unacknowledged (a new one goes out when an ack or error arrives). The sockets
// also receive their own appends as data frames (every socket follows its stream); those are
// skipped by their prefix. After `warmup` s, acks are counted for `seconds`.
async function wsAppends({ connections = 16, inFlight = 32, seconds = 10, warmup = 1, deflate = false }) {
  const paths = Array.from({ length: connections }, (_, i) => `bench-wsa-${runId}-${i}`);
  for (const path of paths) await create(path);
  const data = message(0);
  let counting = false;
  let stop = false;
  let acked = 0;
  let failed = 0;
  let lost = 0;
  const sockets = [];
  const drained = [];
  for (const path of paths) {
    let sent = 0;
    let outstanding = 0;
    let socket;
    let done;
    drained.push(new Promise((r) => { done = r; }));
    const send = () => {
      socket.send(`{"op":"append","id":${sent++},"data":${data}}`);
      outstanding++;
    };
    const onFrame = (frame) => {
      let ok;
      if (startsWith(frame, ACK)) ok = true;
      else if (startsWith(frame, ERROR)) ok = false;
      else return; // our own appends coming back, and control frames
      outstanding--;
      if (counting) {
        if (ok) acked++;
        else failed++;
      }
      if (!stop) send();
      else if (outstanding === 0) done();
    };
    const onClose = () => { lost += outstanding; done(); };
    socket = await subscribe(path, { onFrame, onClose, deflate });
    sockets.push(socket);
    for (let i = 0; i < inFlight; i++) send();
  }
  await sleep(warmup * 1000);
  counting = true;
  const cpu = cpuMeter();
  const started = performance.now();
  await sleep(seconds * 1000);
  counting = false;
  const elapsed = (performance.now() - started) / 1000;
  const clientCores = cpu();
  stop = true;
  await Promise.race([Promise.all(drained), sleep(10000)]);
  await closeAll(sockets);
  return { acks_per_s: acked / elapsed, failed, lost, connections, in_flight: inFlight, client_cpu_cores: clientCores };
}

// Idle websockets, for the server's memory per connection, measured by the caller (run.py):
// opens and closes `warmupSockets` subscribers, prints {"phase":"warm"} and waits for a line on
// stdin; opens `subscribers` idle subscribers (offset=now, each waiting for its first control
// frame), prints {"phase":"open",...} and waits for a line again; closes them and prints the
// result. Nothing is appended, so no frame follows the first control frame.
async function wsIdle({ subscribers = 2000, warmupSockets = 100, concurrency = 50, deflate = false }) {
  const path = `bench-wsi-${runId}`;
  await create(path);
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const phase = async (name, extra = {}) => {
    console.log(JSON.stringify({ phase: name, ...extra }));
    if ((await lines.next()).done) throw new Error("stdin closed");
  };
  await closeAll(await pool(warmupSockets, concurrency, () => subscribe(path, { deflate })));
  await sleep(1000);
  await phase("warm");
  let closedEarly = 0;
  let closing = false;
  const onClose = () => { if (!closing) closedEarly++; };
  const opening = performance.now();
  const sockets = await pool(subscribers, concurrency, () => subscribe(path, { deflate, onClose }));
  const connectSeconds = (performance.now() - opening) / 1000;
  await sleep(1000);
  await phase("open", { open: sockets.length - closedEarly });
  closing = true;
  await closeAll(sockets);
  return { subscribers, warmup_sockets: warmupSockets, closed_early: closedEarly, connect_s: connectSeconds };
}

const scenarios = {
  appends,
  "long-poll": longPollLatency,
  "sse-fanout": sseFanout,
  "catch-up": catchUp,
  "ws-fanout": wsFanout,
  "ws-appends": wsAppends,
  "ws-idle": wsIdle,
};
const fn = scenarios[scenario];
if (!fn) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const result = await fn(options);
agent.destroy();
console.log(JSON.stringify(result));
process.exit(0);
