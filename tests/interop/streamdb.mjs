// Reads one stream with the public StreamDB client (@durable-streams/state) and prints what it
// materialized, as the Durable Sessions reference client would see it.
//
// Usage: node streamdb.mjs --url URL [--live sse|long-poll] [--headers JSON] [--txid ID]
//        [--until JSON] [--until-absent JSON] [--post JSON] [--browser ORIGIN]
//        [--ready-file PATH] [--timeout S]
//
//   --url           the stream, e.g. http://127.0.0.1:8000/v1/stream/sessions/<id>
//   --live          StreamDB's live mode: "sse" or "long-poll" (default "long-poll", which is what
//                   StreamDB's own default, `live: true`, picks)
//   --headers       request headers as a JSON object, e.g. {"Cookie": "sessionid=..."}
//   --txid          a txid to await with awaitTxId and its default timeout (5 s)
//   --until         {"chunk": ["m1:0"], ...}: keys that must be present before the answer
//   --until-absent  {"agent": ["a1"], ...}: keys that must be absent before the answer
//   --post          {"url", "body", "headers"?}: after the first sync, POST this JSON body with
//                   the stream's headers (and these) as the reference client does, then await
//   --browser       the page's origin, e.g. http://127.0.0.1:8000: send what a browser adds to a
//                   same-origin fetch from that page (Node's fetch adds none of it): on every
//                   request Sec-Fetch-Site: same-origin, Sec-Fetch-Mode: cors and
//                   Sec-Fetch-Dest: empty; on the POST also Origin (browsers send it on every
//                   POST). No CSRF header, as the reference client sends none.
//   --ready-file    a file written once the first sync is done (StreamDB is live from then on)
//   --timeout       seconds for the whole run (default 20)
//
// Prints one JSON document on stdout: {"ok", "live", "offset", "collections": {"chunk": {key:
// row}, "presence": {...}, "agent": {...}}, "invalid": [...], "txid": {...} | null, "post":
// {...} | null, "errors": [...], "error"?}. Exit status 0 when everything asked for happened,
// 1 when not (the document says what), 2 on bad arguments.

import { writeFileSync } from "node:fs"
import { parseArgs } from "node:util"
import { z } from "zod"
import { createStateSchema, createStreamDB } from "@durable-streams/state/db"

// WIRE.md section 3: the session stream's rows (the reference's durable-session schema).
const chunk = z.object({
  messageId: z.string(),
  actorId: z.string(),
  role: z.enum(["user", "assistant", "system"]),
  chunk: z.string(),
  seq: z.number().int().nonnegative(),
  createdAt: z.string().regex(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
})
const presence = z.object({
  actorId: z.string(),
  deviceId: z.string(),
  actorType: z.enum(["user", "agent"]),
  name: z.string().optional(),
  status: z.enum(["online", "offline", "away"]),
  lastSeenAt: z.string(),
})
const agent = z.object({
  agentId: z.string(),
  name: z.string().optional(),
  endpoint: z.string(),
  triggers: z.enum(["all", "user-messages"]).optional(),
})

// Collection names as the event types; primary keys as the reference client sets them.
const schema = createStateSchema({
  chunk: { schema: chunk, type: "chunk", primaryKey: "id" },
  presence: { schema: presence, type: "presence", primaryKey: "id" },
  agent: { schema: agent, type: "agent", primaryKey: "agentId" },
})

const OPTIONS = {
  url: { type: "string" },
  live: { type: "string", default: "long-poll" },
  headers: { type: "string", default: "{}" },
  txid: { type: "string" },
  until: { type: "string", default: "{}" },
  "until-absent": { type: "string", default: "{}" },
  post: { type: "string" },
  browser: { type: "string" },
  "ready-file": { type: "string" },
  timeout: { type: "string", default: "20" },
}

function usage(message) {
  process.stderr.write(`streamdb.mjs: ${message}\n`)
  process.exit(2)
}

function json(name, text) {
  try {
    return JSON.parse(text)
  } catch (error) {
    return usage(`--${name} is not JSON: ${error.message}`)
  }
}

function keyLists(name, value) {
  const ok =
    value && typeof value === "object" && !Array.isArray(value) &&
    Object.entries(value).every(
      ([k, keys]) => k in schema && Array.isArray(keys) && keys.every((x) => typeof x === "string")
    )
  if (!ok) usage(`--${name} must map collection names (${Object.keys(schema)}) to lists of keys`)
  return value
}

let args
try {
  args = parseArgs({ options: OPTIONS, strict: true }).values
} catch (error) {
  usage(error.message)
}
if (!args.url) usage("--url is required")
if (!["sse", "long-poll"].includes(args.live)) usage(`--live must be sse or long-poll`)
const browser = args.browser ?? null
if (browser !== null && !/^https?:\/\/[^/]+$/.test(browser)) {
  usage("--browser must be an origin (scheme://host[:port])")
}
const fetchMetadata =
  browser === null ? {} : { "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty" }
const headers = { ...fetchMetadata, ...json("headers", args.headers) }
const until = keyLists("until", json("until", args.until))
const untilAbsent = keyLists("until-absent", json("until-absent", args["until-absent"]))
const post = args.post === undefined ? null : json("post", args.post)
if (post !== null && (typeof post.url !== "string" || !("body" in post))) {
  usage(`--post needs "url" and "body"`)
}
const timeoutMs = Number(args.timeout) * 1000
if (!(timeoutMs > 0)) usage("--timeout must be a positive number of seconds")

// StreamDB reports a consumer that stopped only through console.error and by rejecting what is
// pending: keep both.
const errors = []
const consoleError = console.error
console.error = (...parts) => {
  errors.push(parts.map((p) => (p instanceof Error ? p.message : typeof p === "string" ? p : JSON.stringify(p))).join(" "))
  consoleError(...parts)
}

const db = createStreamDB({
  streamOptions: { url: args.url, headers, contentType: "application/json" },
  live: args.live,
  state: schema,
})

const started = performance.now()
const deadline = started + timeoutMs
const report = {
  ok: false,
  live: args.live,
  offset: null,
  collections: {},
  invalid: [],
  txid: null,
  post: null,
  errors,
}

function snapshot() {
  report.offset = db.offset
  report.invalid = []
  for (const [name, definition] of Object.entries(schema)) {
    const rows = {}
    for (const [key, row] of db.collections[name].entries()) {
      // Without StreamDB's insertion counter and TanStack DB's virtual `$` properties.
      rows[key] = Object.fromEntries(
        Object.entries(row).filter(([field]) => field !== "_seq" && !field.startsWith("$"))
      )
      const checked = definition.schema["~standard"].validate(row)
      if (checked.issues) {
        report.invalid.push({ collection: name, key, issues: checked.issues.map((i) => `${i.path?.join(".") ?? ""}: ${i.message}`) })
      }
    }
    report.collections[name] = rows
  }
}

function finish(ok, error) {
  snapshot()
  report.ok = ok
  if (error) report.error = error
  process.stdout.write(JSON.stringify(report) + "\n")
  db.close()
  process.exit(ok ? 0 : 1)
}

function remaining() {
  return Math.max(0, deadline - performance.now())
}

function failAfter(ms, message) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(message)), ms))
}

// A txid nobody writes: StreamDB rejects it (and every other wait) when its consumer stops.
const stopped = db.utils.awaitTxId(`never-${crypto.randomUUID()}`, 2 ** 31 - 1)
stopped.catch(() => {})

function conditionHolds() {
  for (const [name, keys] of Object.entries(until)) {
    if (!keys.every((key) => db.collections[name].has(key))) return false
  }
  for (const [name, keys] of Object.entries(untilAbsent)) {
    if (keys.some((key) => db.collections[name].has(key))) return false
  }
  return true
}

function conditionMet() {
  return new Promise((resolve) => {
    if (conditionHolds()) return resolve()
    const subscriptions = Object.keys(schema).map((name) =>
      db.collections[name].subscribeChanges(() => {
        if (conditionHolds()) {
          subscriptions.forEach((s) => s.unsubscribe())
          resolve()
        }
      })
    )
  })
}

async function main() {
  await Promise.race([db.preload(), stopped, failAfter(remaining(), "preload did not finish in time")])
  report.preloadMs = Math.round(performance.now() - started)
  if (args["ready-file"]) writeFileSync(args["ready-file"], JSON.stringify({ offset: db.offset }))

  if (post !== null) {
    const sent = {
      "Content-Type": "application/json",
      ...headers,
      ...(browser === null ? {} : { Origin: browser }),
      ...(post.headers ?? {}),
    }
    const response = await fetch(post.url, {
      method: "POST",
      headers: sent,
      body: JSON.stringify(post.body),
    })
    report.post = { status: response.status, body: await response.text(), headers: sent }
    if (!response.ok) return finish(false, `POST ${post.url} answered ${response.status}: ${report.post.body}`)
  }

  if (args.txid !== undefined) {
    const asked = performance.now()
    try {
      await Promise.race([db.utils.awaitTxId(args.txid), stopped])
      report.txid = { txid: args.txid, resolved: true, ms: Math.round(performance.now() - asked) }
    } catch (error) {
      report.txid = { txid: args.txid, resolved: false, ms: Math.round(performance.now() - asked), error: error.message }
      return finish(false, `awaitTxId(${args.txid}) failed: ${error.message}`)
    }
  }

  await Promise.race([conditionMet(), stopped, failAfter(remaining(), "the --until condition did not hold in time")])
  finish(true)
}

main().catch((error) => finish(false, error?.message ?? String(error)))
