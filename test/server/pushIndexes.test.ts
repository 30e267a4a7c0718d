/**
 * The hidden indexes of pushes, in-process: what a push builds is dropped if
 * it is never finished (replaced by a newer push, failing at finish_push, a
 * dry run), and an index a switch hid is dropped once no app still serving
 * declares it (pushes back and forth within the retirement time included);
 * a deployment that closes disposes of the apps still retiring.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Deployment } from "../../src/server/deployment.js";
import { PushManager } from "../../src/server/push.js";
import { indexesOf, tempDir } from "../helpers.js";

/** Long enough for three pushes to switch while the first replaced app still serves. */
const RETIRE_MS = 3_000;

let dir: ReturnType<typeof tempDir>;
let deployment: Deployment;
let pushes: PushManager;
let closed: boolean;

beforeEach(async () => {
  dir = tempDir();
  deployment = await Deployment.open({
    dataDir: dir.path,
    adminKey: "test-admin-key",
    retireAfterMs: RETIRE_MS,
  });
  pushes = new PushManager(deployment);
  closed = false;
});

async function close(): Promise<void> {
  if (closed) return;
  closed = true;
  pushes.close();
  await deployment.close();
}

afterEach(async () => {
  await close();
  dir.remove();
});

/**
 * A start_push body of an app without functions whose schema declares `t.by_key` on `field`
 * (none if null), with fields `a` and `b` numbers and `c` of type `c`.
 */
function pushOf(field: string | null, c: "number" | "any"): unknown {
  const schema = {
    tables: [
      {
        tableName: "t",
        indexes: field === null ? [] : [{ indexDescriptor: "by_key", fields: [field] }],
        searchIndexes: [],
        vectorIndexes: [],
        documentType: {
          type: "object",
          value: {
            a: { fieldType: { type: "number" }, optional: false },
            b: { fieldType: { type: "number" }, optional: false },
            c: { fieldType: { type: c }, optional: false },
          },
        },
      },
      // A table without indexes.
      {
        tableName: "u",
        indexes: [],
        searchIndexes: [],
        vectorIndexes: [],
        documentType: { type: "any" },
      },
    ],
    schemaValidation: true,
  };
  return {
    appDefinition: {
      schema: {
        path: "schema.js",
        environment: "isolate",
        source: `export default { export: () => ${JSON.stringify(JSON.stringify(schema))} };`,
      },
      changedModules: [],
      unchangedModuleHashes: [],
      udfServerVersion: "1.48.0",
    },
    componentDefinitions: [],
    nodeDependencies: [],
  };
}

async function start(field: string | null, c: "number" | "any" = "number"): Promise<string> {
  const r = (await pushes.startPush(pushOf(field, c))) as { tesseraPushId: string };
  return r.tesseraPushId;
}
const wait = (id: string) => pushes.waitForSchema({ schemaChange: { schemaIds: { "": id } } });
const finish = (id: string) => pushes.finishPush({ startPush: { tesseraPushId: id } });

const indexes = () => indexesOf(deployment.db, "t");

async function deploy(field: string | null, c: "number" | "any" = "number"): Promise<void> {
  const id = await start(field, c);
  await wait(id);
  await finish(id);
}

/** Deploys the app with `t.by_key` on `a` (and `c` any value), over documents whose fields are numbers. */
async function deployFirst(): Promise<void> {
  await deploy("a", "any");
  await deployment.db.run(async (tx) => {
    for (let i = 0; i < 100; i++) await tx.insert("t", { a: i, b: -i, c: i });
  });
}

/** The first app deployed, and a push changing `by_key` to `b` waited for (not finished): its ID. */
async function replacementBuilt(): Promise<string> {
  await deployFirst();
  const id = await start("b");
  await wait(id);
  expect(indexes()).toEqual({ found: ["by_key(a)"], hidden: ["by_key(b)"] });
  return id;
}

describe("a push's hidden indexes", () => {
  it("are dropped when a newer push replaces it before it is finished", async () => {
    await replacementBuilt();
    // A newer push forgets this one: what it built goes.
    await start("a");
    await expect.poll(() => indexes()).toEqual({ found: ["by_key(a)"], hidden: [] });
  });

  it("are dropped when its finish_push fails", async () => {
    const id = await replacementBuilt();
    // The live app allows it, the push's schema (c a number) does not: finish_push's check fails.
    await deployment.db.run((tx) => tx.insert("t", { a: 0, b: 0, c: "text" }));
    await expect(finish(id)).rejects.toThrow(/Schema validation failed/);
    await expect.poll(() => indexes()).toEqual({ found: ["by_key(a)"], hidden: [] });
  });

  it("are dropped when its finish_push turns out a dry run", async () => {
    const id = await replacementBuilt();
    await pushes.finishPush({ startPush: { tesseraPushId: id }, dryRun: true });
    await expect.poll(() => indexes()).toEqual({ found: ["by_key(a)"], hidden: [] });
  });
});

describe("a push's tables", () => {
  it("exist from the switch on, documents or not", async () => {
    const id = await start("a");
    await wait(id);
    expect(deployment.db.catalog.table("u")).toBeUndefined();
    await finish(id);
    expect(deployment.db.catalog.table("u")).toBeDefined();
  });
});

describe("the indexes a switch hid", () => {
  it("are dropped once the old app has retired", async () => {
    await deployFirst();
    await deploy("b");
    expect(indexes()).toEqual({ found: ["by_key(b)"], hidden: ["by_key(a)"] });
    await expect.poll(() => indexes()).toEqual({ found: ["by_key(b)"], hidden: [] });
  });

  it("stay while any app still serving declares them, through pushes back and forth", async () => {
    await deployFirst();
    // Every index a serving app declares exists, found by name or hidden, at every moment.
    const missing: string[] = [];
    const check = () => {
      const { found, hidden } = indexes();
      for (const app of deployment.servingApps)
        for (const i of app.schema?.indexes ?? []) {
          const name = `${i.name}(${i.fields.join(",")})`;
          if (!found.includes(name) && !hidden.includes(name)) missing.push(name);
        }
    };
    const sampler = setInterval(check, 2);
    try {
      // Each app retires RETIRE_MS after the next switch: the one on `a` switched away from
      // first retires while the third, also on `a`, still serves.
      for (const field of ["b", "a", "b"]) await deploy(field);
      await expect.poll(() => deployment.servingApps.length).toBe(1);
    } finally {
      clearInterval(sampler);
    }
    check();
    expect(missing).toEqual([]);
    await expect.poll(() => indexes()).toEqual({ found: ["by_key(b)"], hidden: [] });
  });

  it("are shown again as they are when a push declares them again", async () => {
    await deployFirst();
    const catalog = () => deployment.db.catalog;
    const table = catalog().table("t")!.number;
    const number = catalog().index(table, "by_key")!.number;
    await deploy(null);
    expect(indexes()).toEqual({ found: [], hidden: ["by_key(a)"] });
    await deploy("a", "any");
    expect(indexes()).toEqual({ found: ["by_key(a)"], hidden: [] });
    // The same index, not built again.
    expect(catalog().index(table, "by_key")!.number).toBe(number);
  });
});

describe("a deployment closing", () => {
  it("disposes of the apps still retiring", async () => {
    await deployFirst();
    await deploy("b");
    const [, retiring] = deployment.servingApps;
    await close();
    await expect(retiring!.runtime.evaluateOnce("1")).rejects.toThrow(/disposed/);
  });
});
