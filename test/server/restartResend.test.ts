/**
 * Mutations the server committed but never got to answer, resent by the
 * official client to the server restarted on the same data directory after
 * a crash: each must be answered with its first result and commit once.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { afterAll, expect, it } from "vitest";
import WebSocket from "ws";
import { sleep } from "../helpers.js";
import { api } from "./api.js";
import {
  type CuttableProxy,
  type ServerProcess,
  startProxy,
  startServer,
} from "./serverProcess.js";

const dataDir = mkdtempSync(join(tmpdir(), "tessera-restart-"));
const servers: ServerProcess[] = [];
let proxy: CuttableProxy | null = null;
let client: ConvexClient | null = null;

afterAll(async () => {
  await client?.close();
  await proxy?.close();
  for (const s of servers) await s.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

it("answers mutations resent after a crash from their commits instead of running them again", async () => {
  const first = await startServer({ dataDir });
  servers.push(first);
  proxy = await startProxy(first.port);
  client = new ConvexClient(proxy.url, {
    webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
    unsavedChangesWarning: false,
  });
  const group = "restart";
  const marks = async (url: string) =>
    new ConvexHttpClient(url, { logger: false }).query(api.counters.marks, { group });
  // The client is connected (and has sent Connect) once a call comes back.
  await client.mutation(api.counters.mark, { group, tag: "before" });

  // Committed, but the responses never reach the client.
  proxy.holdResponses();
  const tags = ["a", "b", "c", "d", "e"];
  const pending = tags.map((tag) => client!.mutation(api.counters.mark, { group, tag }));
  const end = Date.now() + 20_000;
  while ((await marks(first.url)).length < tags.length + 1 && Date.now() < end) await sleep(20);
  const committed = await marks(first.url);
  expect(committed.length).toBe(tags.length + 1);
  const committedIds = await new ConvexHttpClient(first.url, { logger: false }).query(
    api.counters.markIds,
    { group },
  );

  // The server dies; a new one starts on the same data directory and port.
  process.kill(-first.pid, "SIGKILL");
  await first.stop();
  proxy.cut();
  const second = await startServer({ dataDir, port: first.port });
  servers.push(second);

  // The client reconnects through the proxy and resends the five requests.
  const ids = await Promise.all(pending);
  const stored = await marks(second.url);
  expect([...stored].sort()).toEqual(["before", ...tags].sort());
  // Each resend was told the id its first run inserted.
  expect(ids).toEqual(tags.map((tag) => committedIds[tag]));
}, 90_000);
