// Starts the reference Durable Streams server: node reference-server.mjs <port> [dataDir]
// Without dataDir it keeps streams in memory; with it, it is file-backed (fsync on append).
import { DurableStreamTestServer } from "@durable-streams/server";

const [, , port, dataDir] = process.argv;
const server = new DurableStreamTestServer({
  port: Number(port),
  host: "127.0.0.1",
  longPollTimeout: Number(process.env.LONG_POLL_TIMEOUT_MS || 20000),
  ...(dataDir ? { dataDir } : {}),
});
await server.start();
console.log(`reference server listening on ${port}${dataDir ? ` (file-backed: ${dataDir})` : " (in memory)"}`);
const stop = async () => { await server.stop(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
