/**
 * Streamed HTTP action bodies through the function runner with a stand-in
 * exchange (no sockets): the action time limit covers a response that is
 * still streaming, and a client that goes away ends the action with its
 * stream cancelled. The real site server is tested in
 * test/server/httpActions.test.ts.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FunctionError, FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import type { HttpExchange, HttpResponseHead } from "../../src/runtime/httpStreams.js";
import { linkModules } from "../../src/runtime/loader.js";
import { openTestDb, type TestDb } from "../helpers.js";

const fixture = join(import.meta.dirname, "../fixtures/app/convex");

let t: TestDb;
let runtime: AppRuntime;
let runner: FunctionRunner;

beforeAll(async () => {
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(fixture)), {
    isolates: 1,
  });
  t = await openTestDb();
  await applySchemaIndexes(t.db, await evaluateSchema((await bundleSchema(fixture))!));
  // The first execution starts the isolate and loads the app: done here, with
  // time to spare, so that the tests' time limit measures streaming only.
  const warmUp = new FunctionRunner({ db: t.db, runtime, actionTimeLimitMs: 30_000 });
  await warmUp.httpAction(endless("warm-up"), { exchange: standIn().exchange });
  // Long enough to stream a few ticks on a slow, loaded machine.
  runner = new FunctionRunner({ db: t.db, runtime, actionTimeLimitMs: 4_000 });
}, 60_000);

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

function standIn() {
  const chunks: string[] = [];
  const heads: HttpResponseHead[] = [];
  let leave: () => void = () => {};
  const exchange: HttpExchange = {
    readRequest: async () => null,
    cancelRequest() {},
    async startResponse(head, first) {
      heads.push(head);
      chunks.push(Buffer.from(first).toString());
    },
    async writeResponse(chunk) {
      chunks.push(Buffer.from(chunk).toString());
      if (chunks.length === 3) leave();
    },
    clientGone: new Promise<void>((resolve) => {
      leave = resolve;
    }),
  };
  return { exchange, chunks, heads, leave: () => leave() };
}

const endless = (name: string) => ({
  method: "GET",
  url: `http://localhost/stream/endless?cancelled=${name}`,
  path: "/stream/endless",
  headers: [] as [string, string][],
  body: null,
});

describe("streamed HTTP action responses", () => {
  it("stop at the action time limit while streaming", async () => {
    const s = standIn();
    // The client stays.
    const exchange = { ...s.exchange, clientGone: new Promise<void>(() => {}) };
    const error = (await runner.httpAction(endless("never"), { exchange }).then(
      () => null,
      (e: unknown) => e,
    )) as FunctionError | null;
    expect(error?.kind).toBe("timeout");
    expect(s.heads).toHaveLength(1);
    expect(s.chunks.length).toBeGreaterThan(1);
  });

  it("cancel the stream and end the action when the client goes away", async () => {
    const s = standIn();
    // Ended by the client, not by the time limit.
    const patient = new FunctionRunner({ db: t.db, runtime, actionTimeLimitMs: 10_000 });
    const { response } = await patient.httpAction(endless("gone"), { exchange: s.exchange });
    expect(response).toMatchObject({ streamed: true, aborted: true, status: 200 });
    expect(s.chunks.slice(0, 3)).toEqual(["tick 0\n", "tick 1\n", "tick 2\n"]);
    // The stream's cancel() runs a mutation (it may commit just after the action ended).
    let value: unknown = 0;
    for (let i = 0; i < 100 && value !== 1; i++) {
      value = (await runner.query("counters:get", { name: "gone" })).value;
      if (value !== 1) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(value).toBe(1);
  });
});
