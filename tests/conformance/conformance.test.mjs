// The official Durable Streams conformance suite, run against CONFORMANCE_TEST_URL.
import { runConformanceTests } from "@durable-streams/server-conformance-tests";

runConformanceTests({
  baseUrl: process.env.CONFORMANCE_TEST_URL,
  longPollTimeoutMs: Number(process.env.CONFORMANCE_LONG_POLL_MS || 2000),
  subscriptions: process.env.CONFORMANCE_SUBSCRIPTIONS === "1",
});
