import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { FunctionRunner } from "../../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../../src/functions/schema.js";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../../src/runtime/bundler.js";
import { linkModules } from "../../src/runtime/loader.js";
import { decodeTs } from "../../src/sync/protocol.js";
import {
  AuthenticationError,
  type Authenticator,
  HEARTBEAT_SLICE,
  type SyncLimits,
  SyncService,
} from "../../src/sync/service.js";
import { Session } from "../../src/sync/session.js";
import { gate, openTestDb, type TestDb } from "../helpers.js";

const APP = join(import.meta.dirname, "..", "fixtures", "app", "convex");

let t: TestDb;
let runtime: AppRuntime;
let runner: FunctionRunner;

beforeAll(async () => {
  t = await openTestDb();
  const schema = await evaluateSchema((await bundleSchema(APP))!);
  await applySchemaIndexes(t.db, schema);
  runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(APP)), { isolates: 1 });
  runner = new FunctionRunner({ db: t.db, runtime, schema });
}, 60_000);

afterAll(async () => {
  runtime?.dispose();
  await t?.close();
});

/** A session on a fake socket that records what it is sent. */
function open(
  service: SyncService,
  transitionChunks = true,
  onSend: (text: string | Buffer) => void = () => {},
) {
  // Server messages as parsed JSON: the tests look at a few fields of each.
  // biome-ignore lint/suspicious/noExplicitAny: see above
  const sent: any[] = [];
  /** The messages as handed to the socket. */
  const raw: Array<string | Buffer> = [];
  /** Per message: the cork window it was sent in (0: none). */
  const windows: number[] = [];
  let corks = 0;
  let corked = false;
  const closed: Array<{ code: number; reason: string }> = [];
  const session = new Session(
    service,
    {
      send: (text) => {
        onSend(text);
        windows.push(corked ? corks : 0);
        raw.push(text);
        sent.push(JSON.parse(text.toString()));
      },
      bufferedAmount: 0,
      close: (code, reason) => closed.push({ code, reason }),
      cork: () => {
        if (corked) return;
        corked = true;
        corks++;
        process.nextTick(() => {
          corked = false;
        });
      },
    },
    { transitionChunks },
  );
  const send = (m: unknown) => session.receive(JSON.stringify(m));
  send({
    type: "Connect",
    sessionId: `s-${Math.random()}`,
    connectionCount: 0,
    lastCloseReason: null,
    clientTs: 0,
  });
  return { session, sent, raw, windows, closed, send };
}

/** Subscribes a new session to `items:echo`, a query that reads nothing (query set version 1). */
function subscribeEcho(s: ReturnType<typeof open>) {
  s.send({
    type: "ModifyQuerySet",
    baseVersion: 0,
    newVersion: 1,
    modifications: [{ type: "Add", queryId: 0, udfPath: "items:echo", args: [{ a: 1 }] }],
  });
}

/** Waits (up to 10 s, however loaded the machine) for `f` to hold. */
const until = async (f: () => boolean) => {
  const deadline = Date.now() + 10_000;
  while (!f() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  expect(f()).toBe(true);
};

/** A sync service over the test database; by default no admin key or user token is accepted. */
function serviceWith(options: { auth?: Authenticator; limits?: Partial<SyncLimits> } = {}) {
  return new SyncService({
    db: t.db,
    runner,
    auth: options.auth ?? {
      isAdminKey: () => false,
      verifyUserToken: async () => {
        throw new Error("no");
      },
    },
    ...(options.limits ? { limits: options.limits } : {}),
  });
}

describe("Session", () => {
  it("sends an idle session a keep-alive: an empty transition from its version to itself", async () => {
    const service = serviceWith({ limits: { heartbeatMs: 30 } });
    try {
      const s = open(service);
      subscribeEcho(s);
      await until(() => s.sent.filter((m) => m.type === "Transition").length >= 3);
      const [first, ...later] = s.sent.filter((m) => m.type === "Transition");
      expect(first.modifications).toHaveLength(1);
      for (const t of later) {
        expect(t.modifications).toEqual([]);
        expect(t.startVersion).toEqual(first.endVersion);
        expect(t.endVersion).toEqual(first.endVersion);
      }
    } finally {
      service.close();
    }
  });

  it("gives keep-alives in slices of sessions, with turns of the event loop between them", async () => {
    const service = serviceWith({ limits: { heartbeatMs: 30 } });
    let turns = 0;
    let spinning = true;
    const spin = () => {
      turns++;
      if (spinning) setImmediate(spin);
    };
    try {
      const n = 3 * HEARTBEAT_SLICE + 10;
      /** The turn in which each session got its first keep-alive. */
      const firstAt: number[] = [];
      for (let i = 0; i < n; i++) {
        open(service, true, (text) => {
          const m = JSON.parse(text.toString());
          if (m.type === "Transition" && firstAt[i] === undefined) firstAt[i] = turns;
        });
      }
      setImmediate(spin);
      await until(() => firstAt.filter((t) => t !== undefined).length === n);
      const perTurn = new Map<number, number>();
      for (const t of firstAt) perTurn.set(t, (perTurn.get(t) ?? 0) + 1);
      // One pass (all fell idle together) spread over at least four turns.
      expect(perTurn.size).toBeGreaterThanOrEqual(4);
      for (const count of perTurn.values()) expect(count).toBeLessThanOrEqual(HEARTBEAT_SLICE);
    } finally {
      spinning = false;
      service.close();
    }
  });

  it("answers a mutation before the transition that reaches its commit, and sends one if none would follow", async () => {
    const service = serviceWith();
    try {
      const s = open(service);
      subscribeEcho(s);
      await until(() => s.sent.some((m) => m.type === "Transition"));
      // echo reads nothing: the mutation changes none of the session's queries.
      s.send({
        type: "Mutation",
        requestId: 0,
        udfPath: "items:add",
        args: [{ name: "x", price: 1, remaining: 1 }],
      });
      await until(() => s.sent.filter((m) => m.type === "Transition").length >= 2);
      const i = s.sent.findIndex((m) => m.type === "MutationResponse");
      expect(s.sent[i].success).toBe(true);
      const commitTs = decodeTs(s.sent[i].ts);
      const after = s.sent.slice(i + 1).find((m) => m.type === "Transition");
      expect(after).toBeDefined();
      expect(decodeTs(after.endVersion.ts) >= commitTs).toBe(true);
      // Both are written together: the response is sent in a cork window the transition shares.
      expect(s.windows[i]).toBeGreaterThan(0);
      expect(s.windows[s.sent.indexOf(after)]).toBe(s.windows[i]);
      // Each transition starts where the previous ended.
      const transitions = s.sent.filter((m) => m.type === "Transition");
      for (let k = 1; k < transitions.length; k++)
        expect(transitions[k].startVersion).toEqual(transitions[k - 1].endVersion);
    } finally {
      service.close();
    }
  });

  it("answers a resent request it no longer remembers from the answer stored with its commit", async () => {
    const service = serviceWith();
    const lookups = vi.spyOn(t.db, "mutationAnswer");
    try {
      const client = `c-${Math.random()}`;
      const req = (requestId: number, reconnected = false) => ({ client, requestId, reconnected });
      const mark = (requestId: number, group: string, tag: string, reconnected = false) =>
        service.mutation(req(requestId, reconnected), "counters:mark", { group, tag }, null, false);
      const group = `forgot-${Math.random()}`;
      const first = await mark(0, group, "t0");
      expect(first.ok).toBe(true);
      // 1,024 later requests push it out of the service's memory (REQUESTS_PER_CLIENT);
      // new requests of a client first seen on its first connection are never looked up.
      await Promise.all(
        Array.from({ length: 1024 }, (_, i) => mark(i + 1, `${group}-filler`, `${i}`)),
      );
      expect(lookups).not.toHaveBeenCalled();
      const again = await mark(0, group, "t0", true);
      expect(lookups).toHaveBeenCalledTimes(1);
      expect(again.ts).toBe(first.ts);
      expect(JSON.parse(`{${again.bodyJson}}`)).toEqual(JSON.parse(`{${first.bodyJson}}`));
      const marks = await runner.query("counters:marks", { group });
      expect(marks.value).toEqual(["t0"]);
      // Another call under the same ids (a client that reused its session id) is run, not
      // answered with the stored answer (a second service: nothing in memory).
      const later = serviceWith();
      try {
        const reused = await later.mutation(
          req(0, true),
          "counters:mark",
          { group, tag: "t2" },
          null,
          false,
        );
        expect(reused.ok).toBe(true);
        expect(reused.ts).not.toBe(first.ts);
        expect((await runner.query("counters:marks", { group })).value).toEqual(["t0", "t2"]);
      } finally {
        later.close();
      }
      // A reconnected client's request that never ran is run.
      const other = `c-${Math.random()}`;
      const fresh = await service.mutation(
        { client: other, requestId: 7, reconnected: true },
        "counters:mark",
        { group, tag: "t1" },
        null,
        false,
      );
      expect(fresh.ok).toBe(true);
      expect((await runner.query("counters:marks", { group })).value).toEqual(["t0", "t2", "t1"]);
    } finally {
      lookups.mockRestore();
      service.close();
    }
  });

  it("answers a request id from memory only for a resend of the same call", async () => {
    const service = serviceWith();
    try {
      const client = `c-${Math.random()}`;
      const group = `reused-${Math.random()}`;
      const mark = (tag: string) =>
        service.mutation(
          { client, requestId: 0, reconnected: false },
          "counters:mark",
          { group, tag },
          null,
          false,
        );
      const first = await mark("a");
      // The same request id with other arguments (a misbehaving client) runs…
      const other = await mark("b");
      expect(other.ok).toBe(true);
      expect(other.ts).not.toBe(first.ts);
      expect((await runner.query("counters:marks", { group })).value).toEqual(["a", "b"]);
      // …and a resend of that call is answered with its outcome, not run again.
      expect(await mark("b")).toEqual(other);
      expect((await runner.query("counters:marks", { group })).value).toEqual(["a", "b"]);
    } finally {
      service.close();
    }
  });

  it("never forgets a request still running, however many follow it", async () => {
    const service = serviceWith();
    const { held, release } = gate();
    const runs = vi.spyOn(runner, "mutation").mockImplementation(async (_path, args) => {
      if ((args as { tag?: string }).tag === "held") await held;
      return { value: "x", logs: [], ts: t.db.latestTs() };
    });
    try {
      const client = `c-${Math.random()}`;
      const call = (requestId: number, tag: string) =>
        service.mutation(
          { client, requestId, reconnected: false },
          "counters:mark",
          { group: "g", tag },
          null,
          false,
        );
      const first = call(0, "held");
      await Promise.all(Array.from({ length: 1100 }, (_, i) => call(i + 1, "quick")));
      // Resent while the first run still waits: the same run answers both.
      const resent = call(0, "held");
      release();
      expect(await resent).toEqual(await first);
      expect(runs.mock.calls.filter(([, a]) => (a as { tag: string }).tag === "held")).toHaveLength(
        1,
      );
    } finally {
      release();
      runs.mockRestore();
      service.close();
    }
  });

  it("encodes a fan-out's transition once for the sessions of a query at the same versions", async () => {
    const service = serviceWith();
    try {
      const subscribe = (queryId: number) => {
        const s = open(service);
        s.send({
          type: "ModifyQuerySet",
          baseVersion: 0,
          newVersion: 1,
          modifications: [
            { type: "Add", queryId, udfPath: "counters:get", args: [{ name: "fan" }] },
          ],
        });
        return s;
      };
      const [a, b, c] = [subscribe(0), subscribe(0), subscribe(7)];
      await until(() => [a, b, c].every((s) => s.sent.length === 1));
      expect(a.sent[0].endVersion).toEqual(b.sent[0].endVersion);
      await runner.mutation("counters:increment", { name: "fan", by: 5 });
      await until(() => [a, b, c].every((s) => s.sent.length === 2));
      // One buffer for both sessions of query 0, holding what each would have been sent.
      expect(Buffer.isBuffer(a.raw[1])).toBe(true);
      expect(a.raw[1]).toBe(b.raw[1]);
      expect(c.raw[1]).not.toBe(a.raw[1]);
      for (const [s, queryId] of [
        [a, 0],
        [b, 0],
        [c, 7],
      ] as const) {
        expect(s.sent[1]).toMatchObject({
          type: "Transition",
          startVersion: s.sent[0].endVersion,
          modifications: [{ type: "QueryUpdated", queryId, value: 5, logLines: [] }],
        });
      }
    } finally {
      service.close();
    }
  });

  it("splits large transitions into chunks for clients that take them", async () => {
    const service = serviceWith({ limits: { transitionChunkBytes: 100 } });
    try {
      const big = "y".repeat(1000);
      const chunked = open(service, true);
      chunked.send({
        type: "ModifyQuerySet",
        baseVersion: 0,
        newVersion: 1,
        modifications: [{ type: "Add", queryId: 0, udfPath: "items:echo", args: [{ big }] }],
      });
      await until(
        () =>
          chunked.sent.length > 0 &&
          chunked.sent.at(-1).partNumber === chunked.sent.at(-1).totalParts - 1,
      );
      expect(chunked.sent.every((m) => m.type === "TransitionChunk")).toBe(true);
      const whole = JSON.parse(chunked.sent.map((m) => m.chunk).join(""));
      expect(whole.type).toBe("Transition");
      expect(whole.modifications[0].value).toEqual({ big });

      const old = open(service, false);
      old.send({
        type: "ModifyQuerySet",
        baseVersion: 0,
        newVersion: 1,
        modifications: [{ type: "Add", queryId: 0, udfPath: "items:echo", args: [{ big }] }],
      });
      await until(() => old.sent.length > 0);
      expect(old.sent[0].type).toBe("Transition");
    } finally {
      service.close();
    }
  });

  it("refuses protocol violations with a FatalError on that session only", async () => {
    const service = serviceWith({ limits: { maxQueriesPerSession: 2 } });
    try {
      const cases: Array<[string, (s: ReturnType<typeof open>) => void, RegExp]> = [
        ["not JSON", (s) => s.session.receive("{"), /not JSON/],
        ["unknown type", (s) => s.send({ type: "Nope" }), /unknown message type/],
        [
          "wrong base version",
          (s) =>
            s.send({ type: "ModifyQuerySet", baseVersion: 5, newVersion: 6, modifications: [] }),
          /Base version 5/,
        ],
        [
          "removing an unknown query",
          (s) =>
            s.send({
              type: "ModifyQuerySet",
              baseVersion: 0,
              newVersion: 1,
              modifications: [{ type: "Remove", queryId: 9 }],
            }),
          /not in the query set/,
        ],
        [
          "too many queries",
          (s) =>
            s.send({
              type: "ModifyQuerySet",
              baseVersion: 0,
              newVersion: 1,
              modifications: [0, 1, 2].map((queryId) => ({
                type: "Add",
                queryId,
                udfPath: "items:echo",
                args: [{}],
              })),
            }),
          /Too many queries/,
        ],
        [
          "nested too deep",
          (s) =>
            s.session.receive(
              `{"type":"Mutation","requestId":0,"udfPath":"items:add","args":[${"[".repeat(100_000)}${"]".repeat(100_000)}]}`,
            ),
          /nested more than 1000 levels/,
        ],
        [
          "bad field",
          (s) => s.send({ type: "Mutation", requestId: -1, udfPath: "items:add", args: [] }),
          /requestId/,
        ],
      ];
      const bystander = open(service);
      bystander.send({
        type: "ModifyQuerySet",
        baseVersion: 0,
        newVersion: 1,
        modifications: [{ type: "Add", queryId: 0, udfPath: "items:inStock", args: [{}] }],
      });
      for (const [name, act, message] of cases) {
        const s = open(service);
        act(s);
        const fatal = s.sent.find((m) => m.type === "FatalError");
        expect(fatal?.error, name).toMatch(message);
        expect(s.closed.length, name).toBe(1);
      }
      await until(() => bystander.sent.some((m) => m.type === "Transition"));
      const before = bystander.sent.length;
      await runner.mutation("items:add", { name: "z", price: 1, remaining: 3 });
      await until(() => bystander.sent.length > before);
      expect(bystander.closed).toEqual([]);
    } finally {
      service.close();
    }
  });
  it("keeps a session's state right through any sequence of messages, and stops at the first bad one", async () => {
    const service = serviceWith({ limits: { maxQueriesPerSession: 3 } });
    /** One step: a message built from what the session's query set is at that point. */
    type Step =
      | { kind: "add"; queryId: number; path: string; args: unknown; version: "next" | "stale" }
      | { kind: "remove"; queryId: number; version: "next" | "stale" }
      | { kind: "mutation"; requestId: number; args: unknown }
      | { kind: "auth"; tokenType: "None" | "User" | "Admin"; version: "next" | "stale" }
      | { kind: "event" };
    const argsValue = fc.oneof(
      fc.constant({}),
      fc.constant({ name: "q", price: 1, remaining: 2 }),
      fc.jsonValue(),
    );
    const version = fc.constantFrom<"next" | "stale">("next", "next", "next", "stale");
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({
        kind: fc.constant("add" as const),
        queryId: fc.nat(4),
        path: fc.constantFrom("items:inStock", "items:echo", "items:secret", "nope:nothing"),
        args: argsValue,
        version,
      }),
      fc.record({ kind: fc.constant("remove" as const), queryId: fc.nat(4), version }),
      fc.record({ kind: fc.constant("mutation" as const), requestId: fc.nat(3), args: argsValue }),
      fc.record({
        kind: fc.constant("auth" as const),
        tokenType: fc.constantFrom("None" as const, "User" as const, "Admin" as const),
        version,
      }),
      fc.record({ kind: fc.constant("event" as const) }),
    );
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), async (steps) => {
          const s = open(service);
          let querySet = 0;
          let identity = 0;
          for (const st of steps) {
            if (s.closed.length > 0) break;
            const sentBefore = s.sent.length;
            let message: Record<string, unknown>;
            if (st.kind === "add" || st.kind === "remove") {
              const base = st.version === "next" ? querySet : querySet + 7;
              message = {
                type: "ModifyQuerySet",
                baseVersion: base,
                newVersion: base + 1,
                modifications: [
                  st.kind === "add"
                    ? { type: "Add", queryId: st.queryId, udfPath: st.path, args: [st.args] }
                    : { type: "Remove", queryId: st.queryId },
                ],
              };
              querySet++;
            } else if (st.kind === "mutation") {
              message = {
                type: "Mutation",
                requestId: st.requestId,
                udfPath: "items:add",
                args: [st.args],
              };
            } else if (st.kind === "auth") {
              message = {
                type: "Authenticate",
                tokenType: st.tokenType,
                baseVersion: st.version === "next" ? identity : identity + 7,
                ...(st.tokenType === "None" ? {} : { value: "not a valid token" }),
              };
              identity++;
            } else {
              message = { type: "Event", eventType: "e", event: null };
            }
            expect(() => s.send(message)).not.toThrow();
            if (st.kind === "mutation") {
              await until(
                () =>
                  s.closed.length > 0 ||
                  s.sent.slice(sentBefore).some((x) => x.type === "MutationResponse"),
              );
            } else {
              for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
            }
          }
          // Let whatever the steps started finish.
          await new Promise((r) => setTimeout(r, 5));
          const fatal = s.sent.findIndex((x) => x.type === "FatalError" || x.type === "AuthError");
          for (const m of s.sent) {
            if (m.type === "FatalError") expect(m.error).not.toMatch(/Internal server error/);
          }
          // Nothing follows a FatalError or AuthError: the socket is closed with it.
          if (fatal >= 0) {
            expect(s.closed.length).toBeGreaterThan(0);
            expect(s.sent.length).toBe(fatal + 1);
          }
          // With no bad message, the last transition reaches every query set and identity sent.
          const transitions = () => s.sent.filter((x) => x.type === "Transition");
          if (fatal < 0 && (querySet > 0 || identity > 0)) {
            await until(() => {
              const last = transitions().at(-1)?.endVersion;
              return last?.querySet === querySet && last?.identity === identity;
            });
          }
          // Transitions chain: each starts where the one before ended.
          const all = transitions();
          for (let i = 1; i < all.length; i++) {
            expect(all[i].startVersion).toEqual(all[i - 1].endVersion);
          }
          s.session.disconnected();
        }),
        { numRuns: 150 },
      );
    } finally {
      service.close();
    }
  });

  it("answers any JSON message, valid or not, without throwing, and names what is wrong with a bad one", async () => {
    const service = serviceWith({ limits: { maxQueriesPerSession: 4 } });
    // One of each message the client sends, valid as it stands.
    const templates: Array<Record<string, unknown>> = [
      { type: "Connect", sessionId: "again", connectionCount: 0, lastCloseReason: null },
      {
        type: "ModifyQuerySet",
        baseVersion: 0,
        newVersion: 1,
        modifications: [
          { type: "Add", queryId: 0, udfPath: "items:inStock", args: [{}], journal: null },
        ],
      },
      {
        type: "ModifyQuerySet",
        baseVersion: 0,
        newVersion: 1,
        modifications: [{ type: "Remove", queryId: 0 }],
      },
      {
        type: "Mutation",
        requestId: 0,
        udfPath: "items:add",
        args: [{ name: "f", price: 1, remaining: 1 }],
      },
      { type: "Action", requestId: 0, udfPath: "items:echo", args: [{}] },
      { type: "Authenticate", tokenType: "None", baseVersion: 0 },
      { type: "Authenticate", tokenType: "Admin", baseVersion: 0, value: "k", impersonating: null },
      { type: "Event", eventType: "e", event: {} },
    ];
    // JSON that trips code expecting a string or a plain object.
    const odd = fc.constantFrom<unknown>(
      { toString: 1 },
      { valueOf: "x", toString: "y" },
      JSON.parse('{"__proto__": {"type": "Connect"}}'),
      [],
      "",
      -1,
      2 ** 53,
      1.5,
    );
    const value = fc.oneof(fc.jsonValue(), odd);
    /** A template with one field (of the message or of its first modification) replaced, dropped or added. */
    const damaged = fc
      .tuple(fc.nat(templates.length - 1), fc.nat(), fc.option(value, { nil: undefined }))
      .map(([t, f, v]) => {
        const m = structuredClone(templates[t]!);
        const mods = m.modifications as Array<Record<string, unknown>> | undefined;
        const target = mods !== undefined && f % 2 === 1 ? mods[0]! : m;
        const keys = [...Object.keys(target), "extra"];
        const key = keys[Math.floor(f / 2) % keys.length]!;
        if (v === undefined) delete target[key];
        else target[key] = v;
        return m;
      });
    const message = fc.oneof(
      { weight: 4, arbitrary: damaged },
      { weight: 1, arbitrary: value },
      { weight: 1, arbitrary: fc.record({ type: fc.constantFrom("Mutation", "Nope"), x: value }) },
    );
    try {
      await fc.assert(
        fc.asyncProperty(message, async (m) => {
          const s = open(service);
          const text = JSON.stringify(m) ?? "null";
          expect(() => s.session.receive(text)).not.toThrow();
          // A request is answered (or refused) once it has run.
          const type = (m as { type?: unknown } | null)?.type;
          if (type === "Mutation" || type === "Action") {
            await until(
              () =>
                s.closed.length > 0 ||
                s.sent.some((x) => x.type === "MutationResponse" || x.type === "ActionResponse"),
            );
          } else {
            await new Promise((r) => setImmediate(r));
          }
          for (const fatal of s.sent.filter((x) => x.type === "FatalError")) {
            // It was JSON, and what was wrong with it is the client's to know.
            expect(fatal.error).not.toMatch(/not JSON|Internal server error/);
          }
          s.session.disconnected();
        }),
        {
          numRuns: 300,
          // Found by this property: fields printed with String(), which throws on such an object.
          examples: [
            [{ type: { toString: 1 } }],
            [{ type: "Mutation", requestId: { toString: 1 }, udfPath: "items:add", args: [] }],
            [{ type: "Event", eventType: { valueOf: "x", toString: "y" } }],
          ],
        },
      );
      // The service still serves a well-behaved session.
      const bystander = open(service);
      bystander.send(templates[1]);
      await until(() => bystander.sent.some((x) => x.type === "Transition"));
      expect(bystander.closed).toEqual([]);
    } finally {
      service.close();
    }
  });

  it("holds results and mutations until an Authenticate is verified; a refused token closes the connection unrun", async () => {
    let release: (ok: boolean) => void = () => {};
    let verifications = 0;
    const service = serviceWith({
      auth: {
        isAdminKey: () => false,
        verifyUserToken: (token) =>
          new Promise((resolve, reject) => {
            verifications++;
            release = (ok) =>
              ok
                ? resolve({
                    identity: { subject: token, issuer: "i", tokenIdentifier: `i|${token}` },
                    expiresAtMs: null,
                  })
                : reject(new AuthenticationError(`bad token ${token}`));
          }),
      },
    });
    try {
      const counter = `auth-${Math.random()}`;
      const value = async () =>
        (await runner.query("counters:get", { name: counter })).value as number;
      // Accepted: nothing is sent (and nothing runs) before the token is verified.
      const s = open(service);
      s.send({ type: "Authenticate", tokenType: "User", value: "u1", baseVersion: 0 });
      s.send({
        type: "ModifyQuerySet",
        baseVersion: 0,
        newVersion: 1,
        modifications: [{ type: "Add", queryId: 0, udfPath: "items:echo", args: [{}] }],
      });
      s.send({
        type: "Mutation",
        requestId: 0,
        udfPath: "counters:increment",
        args: [{ name: counter }],
      });
      await new Promise((r) => setTimeout(r, 100));
      expect(s.sent).toEqual([]);
      expect(await value()).toBe(0);
      await until(() => verifications === 1);
      release(true);
      await until(() => s.sent.some((m) => m.type === "Transition"));
      const transition = s.sent.find((m) => m.type === "Transition");
      expect(transition.endVersion.identity).toBe(1);
      await until(() => s.sent.some((m) => m.type === "MutationResponse"));
      expect(await value()).toBe(1);

      // Refused: an AuthError, the connection closes, and the mutation sent after it never runs.
      const r = open(service);
      r.send({ type: "Authenticate", tokenType: "User", value: "u2", baseVersion: 0 });
      r.send({
        type: "Mutation",
        requestId: 0,
        udfPath: "counters:increment",
        args: [{ name: counter }],
      });
      await until(() => verifications === 2);
      release(false);
      await until(() => r.closed.length > 0);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(r.sent).toEqual([
        { type: "AuthError", error: "bad token u2", baseVersion: 0, authUpdateAttempted: true },
      ]);
      expect(r.closed).toEqual([{ code: 1000, reason: "Authentication failed" }]);
      expect(await value()).toBe(1);
    } finally {
      service.close();
    }
  });

  it("reports a token's expiry with an AuthError (authUpdateAttempted: false) and closes", async () => {
    const service = serviceWith({
      auth: {
        isAdminKey: () => false,
        verifyUserToken: async () => ({
          identity: { subject: "s", issuer: "i", tokenIdentifier: "i|s" },
          expiresAtMs: Date.now() + 200,
        }),
      },
    });
    try {
      const s = open(service);
      s.send({ type: "Authenticate", tokenType: "User", value: "t", baseVersion: 0 });
      await until(() => s.closed.length > 0);
      expect(s.sent.at(-1)).toEqual({
        type: "AuthError",
        error: "Token expired",
        baseVersion: 0,
        authUpdateAttempted: false,
      });
      expect(s.closed).toEqual([{ code: 1000, reason: "Token expired" }]);
    } finally {
      service.close();
    }
  });

  it("reports the expiry even when its timer fires before Date.now() reaches it", async () => {
    // Timers run on the monotonic clock, Date.now() on the wall clock; the two
    // drift (Node fires a timer up to a millisecond early by Date.now(), and
    // more when the wall clock is slewed). Here the wall clock falls 300 ms
    // behind once the expiry timer is armed.
    let verified = false;
    const service = serviceWith({
      auth: {
        isAdminKey: () => false,
        verifyUserToken: async () => {
          verified = true;
          return {
            identity: { subject: "s", issuer: "i", tokenIdentifier: "i|s" },
            expiresAtMs: Date.now() + 2_000,
          };
        },
      },
    });
    const wallClock = Date.now.bind(Date);
    try {
      const s = open(service);
      s.send({ type: "Authenticate", tokenType: "User", value: "t", baseVersion: 0 });
      await until(() => verified);
      await new Promise((resolve) => setTimeout(resolve, 10));
      vi.spyOn(Date, "now").mockImplementation(() => wallClock() - 300);
      // Still open: the lag is in place before the timer fires.
      expect(s.closed).toEqual([]);
      await until(() => s.closed.length > 0);
      expect(s.sent.at(-1)).toMatchObject({ type: "AuthError", error: "Token expired" });
    } finally {
      vi.restoreAllMocks();
      service.close();
    }
  });
});
