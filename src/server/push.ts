/**
 * The server side of the official CLI's push (`npx convex deploy`,
 * `npx convex dev`): `start_push` loads and analyses the new app without
 * serving it, `wait_for_schema` checks the existing data against the new
 * schema and builds the indexes it lacks hidden (beside any of the same
 * name on other fields), `finish_push` switches the indexes in one commit,
 * stores the app and installs it. The old app serves until that switch, and
 * reads its own indexes until it retires.
 * Request and response shapes follow the CLI's own schemas
 * (`convex/src/cli/lib/deployApi/`); apps with components are refused.
 */
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { type Catalog, checkTableName, DatabaseError, sameFields } from "../database/index.js";
import { authInfoOf, describeProvider } from "../functions/authConfig.js";
import type { CronSpec } from "../functions/crons.js";
import {
  declaresIndex,
  dropHiddenIndexes,
  findSchemaViolation,
  liveIndex,
  type Schema,
  type SchemaIndex,
} from "../functions/schema.js";
import { holdSchema } from "../functions/schemaGuard.js";
import type { ModuleSource } from "../runtime/modules.js";
import { isPlainObject } from "../values/index.js";
import { moduleHash, newImportSeed, type StoredApp } from "./codeStore.js";
import {
  AppRejectedError,
  type Deployment,
  disposeApp,
  type PreparedApp,
  prepareApp,
} from "./deployment.js";
import { HttpError } from "./httpApi.js";

/** An index as the CLI prints it (`DeveloperIndexConfig`). */
interface DevIndex {
  name: string;
  type: "database";
  fields: string[];
}

interface IndexDiff {
  added_indexes: DevIndex[];
  removed_indexes: DevIndex[];
}

interface PendingPush {
  id: string;
  app: PreparedApp;
  diff: IndexDiff;
  dryRun: boolean;
  expires: NodeJS.Timeout;
}

/** A push not finished within this long is forgotten (its runtime disposed). */
const PENDING_PUSH_MS = 10 * 60_000;

const ROOT = "";

export class PushManager {
  private readonly pending = new Map<string, PendingPush>();
  /** One push changes the deployment at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly stopWatching: () => void;

  constructor(private readonly deployment: Deployment) {
    // The indexes a switch hid are read by the previous app until it retires.
    this.stopWatching = deployment.onRetired(() => this.dropUnusedHiddenIndexes());
  }

  /** `POST /api/get_config_hashes`: what the CLI may skip re-sending. */
  configHashes(): unknown {
    const app = this.deployment.app?.stored;
    return {
      config: { functions: app?.functions ?? "convex/" },
      moduleHashes: (app?.modules ?? []).map((m) => ({
        path: m.path,
        hash: moduleHash(m),
        environment: m.environment,
      })),
      nodeDependencies: app?.nodeDependencies ?? [],
      ...(app ? { udfServerVersion: app.udfServerVersion } : {}),
    };
  }

  /** `POST /api/deploy2/evaluate_schema`: nothing to warn about (indexes here are small to build). */
  evaluateSchema(body: unknown): unknown {
    parseStartPush(body);
    return { componentSchemaEvaluations: {}, newComponentDefinitions: [] };
  }

  /** `POST /api/deploy2/evaluate_push`: the index changes the push would make. */
  async evaluatePush(body: unknown): Promise<unknown> {
    const req = parseStartPush(body);
    const app = await this.prepare(req);
    try {
      return { schemaChange: { indexDiffs: { [ROOT]: this.indexDiff(app.schema) } } };
    } finally {
      disposeApp(app);
    }
  }

  /** `POST /api/deploy2/start_push`. */
  async startPush(body: unknown): Promise<unknown> {
    const req = parseStartPush(body);
    const app = await this.prepare(req);
    const diff = this.indexDiff(app.schema);
    // A newer push replaces the ones started before it: each holds its app's
    // runtimes (isolates, a Node.js process), and pushes that are started and
    // never finished would otherwise pile up until they expire.
    for (const old of [...this.pending.keys()]) this.forget(old);
    const id = randomUUID();
    const expires = setTimeout(() => this.forget(id), PENDING_PUSH_MS);
    expires.unref();
    this.pending.set(id, { id, app, diff, dryRun: req.dryRun, expires });
    return {
      environmentVariables: {},
      externalDepsId: null,
      componentDefinitionPackages: {},
      appAuth: (app.authProviders ?? []).map(authInfoOf),
      analysis: { [ROOT]: analysisOf(app) },
      app: {
        definitionPath: ROOT,
        componentPath: ROOT,
        args: {},
        childComponents: {},
        httpRoutes: { httpModuleRoutes: null, mounts: [] },
        exports: {},
      },
      schemaChange: { indexDiffs: { [ROOT]: diff }, schemaIds: { [ROOT]: id } },
      tesseraPushId: id,
    };
  }

  /** `POST /api/deploy2/wait_for_schema`: validates the data and builds new indexes. */
  async waitForSchema(body: unknown): Promise<unknown> {
    if (!isPlainObject(body)) throw new HttpError(400, "The request body must be a JSON object");
    const schemaChange = (body as { schemaChange?: unknown }).schemaChange;
    const ids = isPlainObject(schemaChange)
      ? (schemaChange as { schemaIds?: unknown }).schemaIds
      : undefined;
    const id = isPlainObject(ids) ? (ids as Record<string, unknown>)[ROOT] : undefined;
    this.pendingPush(id);
    return this.exclusive(async () => {
      // Looked up again when its turn comes: it may have been finished or replaced meanwhile.
      const push = this.pendingPush(id);
      const problem = await findSchemaViolation(this.deployment.db, push.app.schema);
      // The check lets other requests run: a newer push may have replaced this one meanwhile.
      this.pendingPush(id);
      if (problem !== null)
        return {
          type: "failed",
          error: problem.error,
          componentPath: ROOT,
          tableName: problem.table,
        };
      if (!push.dryRun) await this.buildIndexes(push);
      return { type: "complete" };
    });
  }

  /** `POST /api/deploy2/finish_push`: switches the deployment to the new app. */
  async finishPush(body: unknown): Promise<unknown> {
    if (!isPlainObject(body)) throw new HttpError(400, "The request body must be a JSON object");
    const start = (body as { startPush?: unknown }).startPush;
    const id = isPlainObject(start)
      ? (start as { tesseraPushId?: unknown }).tesseraPushId
      : undefined;
    this.pendingPush(id);
    return this.exclusive(async () => {
      // Looked up again when its turn comes: an app finished (or replaced and
      // disposed) meanwhile must not be installed.
      const push = this.pendingPush(id);
      const dryRun = (body as { dryRun?: unknown }).dryRun === true || push.dryRun;
      const previous = this.deployment.app;
      const result = finishDiff(previous, push.app, push.diff);
      this.pending.delete(push.id);
      clearTimeout(push.expires);
      if (dryRun) {
        this.discard(push);
        return result;
      }
      // Data written since wait_for_schema must satisfy the schema too, and
      // so must what commits while it is checked.
      let held: Awaited<ReturnType<typeof holdSchema>> | null;
      try {
        held =
          push.app.schema === null ? null : await holdSchema(this.deployment.db, push.app.schema);
      } catch (e) {
        // No longer pending: nothing else would dispose of it.
        this.discard(push);
        throw e;
      }
      if (held !== null && held.violation !== null) {
        this.discard(push);
        throw new HttpError(
          400,
          `Schema validation failed: ${held.violation.error}`,
          "SchemaValidationFailed",
        );
      }
      // Decided: from here an old-app commit that breaks the new schema fails
      // (held's guard enforces), rather than land after the check.
      let switched = false;
      try {
        // Built by wait_for_schema unless it was skipped (or what it built dropped since).
        await this.buildIndexes(push);
        await this.switchIndexes(push.app.schema);
        switched = true;
        this.deployment.codeStore.save(push.app.stored);
        await this.deployment.install(push.app);
      } catch (e) {
        if (!switched) this.discard(push);
        // Not installed (its code could not be stored): the old app serves on, on its hidden indexes.
        else if (this.deployment.app !== push.app) disposeApp(push.app);
        throw e;
      } finally {
        held?.guard.dispose();
      }
      return result;
    });
  }

  close(): void {
    this.closed = true;
    this.stopWatching();
    // What they built stays hidden (closed, nothing is dropped): the next start drops it.
    for (const id of [...this.pending.keys()]) this.forget(id);
  }

  private pendingPush(id: unknown): PendingPush {
    const push = typeof id === "string" ? this.pending.get(id) : undefined;
    if (push === undefined)
      throw new HttpError(
        400,
        "Unknown push: it was never started here, already finished, replaced by a newer push, or expired (pushes expire after 10 minutes); push again",
        "UnknownPush",
      );
    return push;
  }

  private forget(id: string): void {
    const push = this.pending.get(id);
    if (push === undefined) return;
    this.pending.delete(id);
    clearTimeout(push.expires);
    this.discard(push);
  }

  /** Disposes of a push that will not be finished (no longer pending), and of what it built. */
  private discard(push: PendingPush): void {
    disposeApp(push.app);
    this.dropUnusedHiddenIndexes();
  }

  /**
   * Drops, after the pushes queued so far, the hidden indexes that neither a
   * serving app (live or retiring) nor a pending push declares on their
   * fields: what a push that will not be finished built, and what a switch
   * hid once the apps reading it have retired.
   */
  private dropUnusedHiddenIndexes(): void {
    this.exclusive(async () => {
      if (this.closed) return;
      const schemas = [
        ...this.deployment.servingApps.map((a) => a.schema),
        ...[...this.pending.values()].map((p) => p.app.schema),
      ];
      await this.deployment.db.run((tx) => dropHiddenIndexes(tx, schemas));
    }).catch((e) => {
      if (!this.closed) console.error("tessera: dropping unused hidden indexes failed:", e);
    });
  }

  private exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => {});
    return run;
  }

  private async prepare(req: StartPushRequest): Promise<PreparedApp> {
    const current = new Map(
      (this.deployment.app?.stored.modules ?? []).map((m) => [`${m.environment}:${m.path}`, m]),
    );
    const modules: ModuleSource[] = [...req.changed];
    for (const h of req.unchanged) {
      const m = current.get(`${h.environment}:${h.path}`);
      if (m === undefined || moduleHash(m) !== h.sha256)
        throw new HttpError(
          400,
          `The push refers to module ${h.path} by hash, but this deployment does not have that version; push again with --push-all-modules`,
        );
      modules.push(m);
    }
    const authConfig = modules.find((m) => m.path === "auth.config.js") ?? null;
    const stored: StoredApp = {
      modules: modules.filter((m) => m !== authConfig),
      schema: req.schema,
      authConfig,
      udfServerVersion: req.udfServerVersion,
      functions: req.functions,
      pushedAtMs: Date.now(),
      importSeed: newImportSeed(),
      ...(req.nodeDependencies.length > 0 ? { nodeDependencies: req.nodeDependencies } : {}),
    };
    let app: PreparedApp;
    try {
      app = await prepareApp(stored, {
        authEnvironment: await this.deployment.authEnvironment(),
        nodeDir: join(this.deployment.dataDir, "node"),
      });
    } catch (e) {
      if (e instanceof AppRejectedError) throw new HttpError(400, e.message, e.code);
      throw e;
    }
    try {
      await this.checkSchema(app.schema);
    } catch (e) {
      disposeApp(app);
      throw e;
    }
    return app;
  }

  /**
   * Refuses a schema whose tables or indexes the database would refuse
   * (names, fields, limits): the index changes are tried in a transaction
   * that is then dropped, so the push fails now with the database's reason
   * instead of at wait_for_schema.
   */
  private async checkSchema(schema: Schema | null): Promise<void> {
    if (schema === null) return;
    const db = this.deployment.db;
    const tx = db.begin();
    let refusal: DatabaseError | null = null;
    try {
      for (const table of schema.validators.tables.keys()) checkTableName(table);
      // The index of each name as the push leaves it, on the rules of a new one.
      for (const index of schema.indexes) {
        const old = liveIndex(tx, index);
        if (old !== undefined && sameFields(old.fields, index.fields)) continue;
        if (old !== undefined) await tx.dropIndex(index.table, index.name);
        await tx.createIndex(index.table, index.name, index.fields);
      }
    } catch (e) {
      if (!(e instanceof DatabaseError)) throw e;
      refusal = e;
    } finally {
      tx.abort();
    }
    if (refusal === null) return;
    // What the refusal read may still be syncing (Database.begin).
    await db.whenPublished(tx.beginTs);
    throw new HttpError(400, `Invalid schema: ${refusal.message}`, "InvalidSchema");
  }

  /** Index changes from the database's user indexes to `schema`'s. */
  private indexDiff(schema: Schema | null): IndexDiff {
    const existing = userIndexes(this.deployment.db.catalog);
    const wanted = new Map((schema?.indexes ?? []).map((i) => [`${i.table}.${i.name}`, i]));
    const added: DevIndex[] = [];
    const removed: DevIndex[] = [];
    for (const [name, index] of wanted) {
      const old = existing.get(name);
      if (old !== undefined && sameFields(old.fields, index.fields)) continue;
      added.push(devIndex(index));
    }
    for (const [name, index] of existing) {
      const now = wanted.get(name);
      if (now === undefined || !sameFields(now.fields, index.fields)) removed.push(devIndex(index));
    }
    return { added_indexes: added, removed_indexes: removed };
  }

  /**
   * Builds, hidden, the indexes the push's schema declares that are not
   * found by name on their fields (new ones, and replacements of an index of
   * the same name on other fields), and waits until they are backfilled.
   * The old app serves on as before; the switch shows them.
   */
  private async buildIndexes(push: PendingPush): Promise<void> {
    const schema = push.app.schema;
    if (schema === null) return;
    const db = this.deployment.db;
    await db.run(async (tx) => {
      for (const index of schema.indexes) {
        const live = liveIndex(tx, index);
        if (live !== undefined && sameFields(live.fields, index.fields)) continue;
        // One a switch hid (the previous app's) is shown again as it is.
        if (tx.hiddenIndex(index.table, index.name, index.fields) !== undefined) continue;
        await tx.createIndex(index.table, index.name, index.fields, { hidden: true });
      }
    });
    await db.waitForBackgroundWork();
  }

  /**
   * In one commit, the indexes of `schema` become the ones found by name:
   * each live index it does not declare on those fields is hidden (the old
   * app reads it until it retires), and the ones it built are shown. Its
   * tables without indexes are created too.
   */
  private async switchIndexes(schema: Schema | null): Promise<void> {
    const wanted = schema?.indexes ?? [];
    await this.deployment.db.run(async (tx) => {
      for (const table of schema?.validators.tables.keys() ?? []) tx.ensureTable(table);
      for (const live of userIndexes(tx.currentCatalog).values()) {
        if (!declaresIndex(schema, live.table, live.name, live.fields))
          await tx.hideIndex(live.table, live.name);
      }
      for (const index of wanted) {
        if (liveIndex(tx, index) !== undefined) continue;
        const built = tx.hiddenIndex(index.table, index.name, index.fields);
        if (built?.state !== "enabled")
          throw new Error(
            `internal error: index ${index.table}.${index.name} was not built before the switch`,
          );
        await tx.showIndex(index.table, index.name, index.fields);
      }
    });
  }
}

/** The user-declared indexes of every user table found by name, by `table.index`. */
function userIndexes(catalog: Catalog): Map<string, SchemaIndex> {
  const out = new Map<string, SchemaIndex>();
  for (const table of catalog.tablesByName.values()) {
    if (table.name.startsWith("_")) continue;
    for (const index of catalog.indexes(table.number)) {
      if (index.kind !== "user" || index.hidden === true) continue;
      out.set(`${table.name}.${index.name}`, {
        table: table.name,
        name: index.name,
        fields: [...index.fields],
      });
    }
  }
  return out;
}

function devIndex(i: SchemaIndex): DevIndex {
  return { name: `${i.table}.${i.name}`, type: "database", fields: [...i.fields] };
}

/** The root component's analysis as the CLI's codegen reads it. */
function analysisOf(app: PreparedApp): unknown {
  const functions: Record<string, unknown> = {};
  for (const m of [...app.runtime.modules, ...(app.nodeExecutor?.modules ?? [])]) {
    const analyzed = m.functions
      .filter((f) => f.kind !== "httpAction")
      .map((f) => ({
        name: f.name,
        udfType: f.kind === "query" ? "Query" : f.kind === "mutation" ? "Mutation" : "Action",
        visibility: { kind: f.visibility },
        args: f.args,
        returns: f.returns,
      }));
    functions[m.path] = { functions: analyzed };
  }
  let schema: unknown = null;
  if (app.schema !== null) {
    const parsed = JSON.parse(app.schema.json) as {
      tables: Array<{ tableName: string; indexes?: unknown[]; documentType?: unknown }>;
      schemaValidation?: boolean;
    };
    schema = {
      tables: parsed.tables.map((t) => ({
        tableName: t.tableName,
        indexes: t.indexes ?? [],
        searchIndexes: [],
        vectorIndexes: [],
        documentType: t.documentType ?? null,
      })),
      schemaValidation: parsed.schemaValidation !== false,
    };
  }
  return {
    definition: {
      path: ROOT,
      definitionType: { type: "app" },
      childComponents: [],
      httpMounts: {},
      exports: { type: "branch", branch: [] },
    },
    schema,
    functions,
    udfConfig: { serverVersion: app.stored.udfServerVersion },
  };
}

function finishDiff(
  previous: PreparedApp | null,
  next: PreparedApp,
  indexDiff: IndexDiff,
): unknown {
  const before = new Set(previous?.stored.modules.map((m) => m.path) ?? []);
  const after = new Set(next.stored.modules.map((m) => m.path));
  const authBefore = new Set((previous?.authProviders ?? []).map(describeProvider));
  const authAfter = new Set((next.authProviders ?? []).map(describeProvider));
  return {
    authDiff: {
      added: [...authAfter].filter((p) => !authBefore.has(p)),
      removed: [...authBefore].filter((p) => !authAfter.has(p)),
    },
    definitionDiffs: {},
    componentDiffs: {
      [ROOT]: {
        diffType: { type: previous === null ? "create" : "modify" },
        moduleDiff: {
          added: [...after].filter((p) => !before.has(p)),
          removed: [...before].filter((p) => !after.has(p)),
        },
        udfConfigDiff:
          previous === null
            ? null
            : {
                previous_version: previous.stored.udfServerVersion,
                next_version: next.stored.udfServerVersion,
              },
        cronDiff: cronDiff(previous?.crons ?? [], next.crons),
        indexDiff,
        schemaDiff: {
          previous_schema: previous?.schema?.json ?? null,
          next_schema: next.schema?.json ?? null,
        },
      },
    },
  };
}

function cronDiff(before: CronSpec[], after: CronSpec[]) {
  const old = new Map(before.map((c) => [c.identifier, JSON.stringify(c)]));
  const now = new Map(after.map((c) => [c.identifier, JSON.stringify(c)]));
  return {
    added: [...now.keys()].filter((k) => !old.has(k)),
    updated: [...now.keys()].filter((k) => old.has(k) && old.get(k) !== now.get(k)),
    deleted: [...old.keys()].filter((k) => !now.has(k)),
  };
}

interface StartPushRequest {
  nodeDependencies: { name: string; version: string }[];
  dryRun: boolean;
  functions: string;
  schema: ModuleSource | null;
  changed: ModuleSource[];
  unchanged: Array<{ path: string; environment: "isolate" | "node"; sha256: string }>;
  udfServerVersion: string;
}

/** Checks a `StartPushRequest` (also the body of evaluate_schema/evaluate_push). */
function parseStartPush(body: unknown): StartPushRequest {
  const bad = (what: string): never => {
    throw new HttpError(400, `Invalid push request: ${what}`, "InvalidPush");
  };
  if (!isPlainObject(body)) bad("the body must be a JSON object");
  const b = body as Record<string, unknown>;
  const app = b.appDefinition;
  if (!isPlainObject(app)) bad("appDefinition is missing");
  const a = app as Record<string, unknown>;
  const components = Array.isArray(b.componentDefinitions) ? b.componentDefinitions : [];
  const deps = Array.isArray(a.dependencies) ? a.dependencies : [];
  if (components.length > 0 || deps.length > 0)
    throw new HttpError(
      400,
      "not supported yet: components (convex.config.ts with app.use(…)); this deployment runs apps without components",
      "ComponentsNotSupported",
    );
  const externals = Array.isArray(b.nodeDependencies) ? b.nodeDependencies : [];
  const nodeDependencies = externals.map((d) => {
    const x = isPlainObject(d) ? (d as Record<string, unknown>) : {};
    if (typeof x.name !== "string" || typeof x.version !== "string")
      return bad("a node dependency needs a name and a version");
    return { name: x.name, version: x.version };
  });
  const changed = Array.isArray(a.changedModules)
    ? a.changedModules
    : bad("changedModules must be a list");
  const unchanged = Array.isArray(a.unchangedModuleHashes)
    ? a.unchangedModuleHashes
    : bad("unchangedModuleHashes must be a list");
  return {
    dryRun: b.dryRun === true,
    functions: typeof b.functions === "string" ? b.functions : "convex/",
    schema: a.schema === null || a.schema === undefined ? null : parseModule(a.schema, bad),
    changed: changed.map((m) => parseModule(m, bad)),
    unchanged: unchanged.map((h) => {
      if (!isPlainObject(h)) return bad("a module hash must be an object");
      const x = h as Record<string, unknown>;
      if (typeof x.path !== "string" || typeof x.sha256 !== "string")
        return bad("a module hash needs path and sha256");
      return { path: x.path, sha256: x.sha256, environment: environmentOf(x.environment, bad) };
    }),
    udfServerVersion: typeof a.udfServerVersion === "string" ? a.udfServerVersion : "unknown",
    nodeDependencies,
  };
}

function parseModule(m: unknown, bad: (what: string) => never): ModuleSource {
  if (!isPlainObject(m)) return bad("a module must be an object");
  const x = m as Record<string, unknown>;
  if (
    typeof x.path !== "string" ||
    !/^[^/].*\.js$/.test(x.path) ||
    x.path.split("/").includes("..")
  )
    return bad(`module path ${JSON.stringify(x.path)} must be a relative .js path`);
  if (typeof x.source !== "string") return bad(`module ${x.path} has no source`);
  if (x.sourceMap !== undefined && x.sourceMap !== null && typeof x.sourceMap !== "string")
    return bad(`module ${x.path} has a sourceMap that is not text`);
  const out: ModuleSource = {
    path: x.path,
    source: x.source,
    environment: environmentOf(x.environment, bad),
  };
  if (typeof x.sourceMap === "string") out.sourceMap = x.sourceMap;
  return out;
}

function environmentOf(e: unknown, bad: (what: string) => never): "isolate" | "node" {
  if (e === "isolate" || e === "node") return e;
  return bad(`module environment must be "isolate" or "node", got ${JSON.stringify(e)}`);
}
