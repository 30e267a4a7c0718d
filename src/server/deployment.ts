/**
 * One deployment served by this process: its database in the data directory,
 * the app code it runs, and the sync service on top. Code comes from the
 * last push of the official CLI (kept in the data directory, see
 * `codeStore.ts`) or from a `convex/` folder bundled at start
 * (`--convex-dir`); a push replaces it while the deployment keeps serving.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Database } from "../database/index.js";
import { EnvironmentCache, ensureEnvironmentTable } from "../functions/environment.js";
import { FunctionRunner } from "../functions/runner.js";
import { applySchemaIndexes, evaluateSchema, type Schema } from "../functions/schema.js";
import { SqlitePersistence } from "../persistence/index.js";
import { AppRuntime } from "../runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../runtime/bundler.js";
import { linkModules } from "../runtime/loader.js";
import type { UserIdentity } from "../runtime/syscalls.js";
import {
  AuthenticationError,
  type Authenticator,
  type SyncLimits,
  SyncService,
} from "../sync/service.js";
import { CodeStore, type StoredApp } from "./codeStore.js";
import { FunctionLogs } from "./functionLogs.js";

export interface DeploymentOptions {
  dataDir: string;
  /** The app's `convex/` folder to serve. */
  convexDir?: string;
  /** Admin key; default: `TESSERA_ADMIN_KEY`, else generated once and kept in the data dir. */
  adminKey?: string;
  syncLimits?: Partial<SyncLimits>;
}

const ADMIN_KEY_FILE = "admin-key";

/** The admin key from the options, the environment, or the data dir (created there once). */
export function resolveAdminKey(dataDir: string, explicit?: string): string {
  const key = explicit ?? process.env.TESSERA_ADMIN_KEY;
  if (key !== undefined && key !== "") {
    if (!/^[\x21-\x7e]+$/.test(key) || key.includes(":"))
      throw new Error("The admin key must be printable ASCII without spaces or ':'");
    return key;
  }
  const file = join(dataDir, ADMIN_KEY_FILE);
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const generated = `tessera|${randomBytes(32).toString("hex")}`;
  writeFileSync(file, `${generated}\n`, { mode: 0o600 });
  return generated;
}

/** Admin keys; user tokens are refused until auth providers can be configured. */
export class DeploymentAuthenticator implements Authenticator {
  constructor(private readonly adminKey: string) {}

  isAdminKey(key: string): boolean {
    const a = Buffer.from(key);
    const b = Buffer.from(this.adminKey);
    // Compare in constant time; the length check leaks only the length.
    return a.length === b.length && timingSafeEqual(a, b);
  }

  async verifyUserToken(_token: string): Promise<UserIdentity> {
    throw new AuthenticationError(
      "No auth provider found matching the given token: this deployment has no auth.config.ts providers (not supported yet: user authentication arrives with the auth work)",
    );
  }
}

/** An app ready to serve: its runtime (modules loaded and analysed) and schema. */
export interface PreparedApp {
  stored: StoredApp;
  runtime: AppRuntime;
  schema: Schema | null;
}

/** A push or folder the deployment cannot serve; the message is for whoever sent it. */
export class AppRejectedError extends Error {
  override name = "AppRejectedError";
}

/** Loads and analyses an app without serving it (the caller disposes `runtime` if unused). */
export async function prepareApp(stored: StoredApp): Promise<PreparedApp> {
  const node = stored.modules.filter((m) => m.environment === "node").map((m) => m.path);
  if (node.length > 0)
    throw new AppRejectedError(
      `not supported yet: "use node" modules (${node.join(", ")}); Node.js actions arrive with the actions work`,
    );
  let schema: Schema | null = null;
  let runtime: AppRuntime;
  try {
    schema = stored.schema === null ? null : await evaluateSchema(stored.schema);
  } catch (e) {
    throw new AppRejectedError(`Failed to evaluate schema.ts: ${errorMessage(e)}`);
  }
  try {
    runtime = await AppRuntime.create(await linkModules(stored.modules));
  } catch (e) {
    throw new AppRejectedError(errorMessage(e));
  }
  const broken = runtime.modules.flatMap((m) =>
    m.functions.filter((f) => f.error !== undefined).map((f) => `${m.path}:${f.name}: ${f.error}`),
  );
  if (broken.length > 0) {
    runtime.dispose();
    throw new AppRejectedError(`Invalid function definitions:\n${broken.join("\n")}`);
  }
  return { stored, runtime, schema };
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The app of a `convex/` folder, bundled the way the official CLI bundles it. */
export async function appFromFolder(convexDir: string): Promise<StoredApp> {
  return {
    modules: [...(await bundleConvexDir(convexDir))],
    schema: await bundleSchema(convexDir),
    authConfig: null,
    udfServerVersion: "folder",
    functions: "convex/",
    pushedAtMs: Date.now(),
  };
}

/** How long a replaced app keeps running the executions it already started. */
const RETIRE_AFTER_MS = 30_000;

export class Deployment {
  readonly auth: DeploymentAuthenticator;
  readonly sync: SyncService;
  readonly codeStore: CodeStore;
  /** Recent executions, for the CLI's logs. */
  readonly logs = new FunctionLogs();
  /** Environment variables for `process.env`, shared by every app version. */
  private readonly environment: EnvironmentCache;
  /** Where clients reach this deployment (set once the servers listen). */
  urls = { cloud: "", site: "" };
  private live: PreparedApp | null;
  private runnerRef: FunctionRunner;

  private constructor(
    readonly db: Database,
    readonly adminKey: string,
    readonly dataDir: string,
    live: PreparedApp | null,
    empty: AppRuntime,
    syncLimits: Partial<SyncLimits> | undefined,
  ) {
    this.auth = new DeploymentAuthenticator(adminKey);
    this.codeStore = new CodeStore(dataDir);
    this.environment = new EnvironmentCache(db);
    this.live = live;
    this.runnerRef = this.runnerFor(live?.runtime ?? empty, live?.schema ?? null);
    this.emptyRuntime = live === null ? empty : null;
    if (live !== null) empty.dispose();
    this.sync = new SyncService({
      db,
      runner: this.runnerRef,
      auth: this.auth,
      ...(syncLimits ? { limits: syncLimits } : {}),
    });
  }

  /** The runtime serving while no app is installed (every call: function not found). */
  private emptyRuntime: AppRuntime | null;

  static async open(options: DeploymentOptions): Promise<Deployment> {
    mkdirSync(options.dataDir, { recursive: true });
    const adminKey = resolveAdminKey(options.dataDir, options.adminKey);
    const db = await Database.open({
      persistence: new SqlitePersistence({ path: join(options.dataDir, "tessera.sqlite") }),
    });
    let live: PreparedApp | null = null;
    try {
      await ensureEnvironmentTable(db);
      const stored =
        options.convexDir !== undefined
          ? await appFromFolder(options.convexDir)
          : new CodeStore(options.dataDir).load();
      if (stored !== null) {
        live = await prepareApp(stored);
        if (live.schema !== null) await applySchemaIndexes(db, live.schema);
      }
      const empty = await AppRuntime.create(await linkModules([]), {
        isolates: 1,
        warmContexts: 0,
      });
      return new Deployment(db, adminKey, options.dataDir, live, empty, options.syncLimits);
    } catch (e) {
      live?.runtime.dispose();
      await db.close();
      throw e;
    }
  }

  /** The app being served, or null before the first push. */
  get app(): PreparedApp | null {
    return this.live;
  }

  get runner(): FunctionRunner {
    return this.runnerRef;
  }

  get schema(): Schema | null {
    return this.live?.schema ?? null;
  }

  private runnerFor(runtime: AppRuntime, schema: Schema | null): FunctionRunner {
    return new FunctionRunner({
      db: this.db,
      runtime,
      schema,
      deploymentUrl: () => this.urls.cloud,
      environment: this.environment,
      onExecution: (r) => this.logs.record(r),
    });
  }

  /**
   * Serves `app` from now on: new executions run its code, every cached
   * query result is re-run on it (and pushed to subscribers), and the
   * previous app finishes what it started before it is disposed.
   */
  install(app: PreparedApp): void {
    const previous = this.live?.runtime ?? this.emptyRuntime;
    this.live = app;
    this.emptyRuntime = null;
    this.runnerRef = this.runnerFor(app.runtime, app.schema);
    this.sync.setRunner(this.runnerRef);
    if (previous !== null && previous !== app.runtime) {
      setTimeout(() => previous.dispose(), RETIRE_AFTER_MS).unref();
    }
  }

  async close(): Promise<void> {
    this.logs.close();
    this.sync.close();
    this.environment.close();
    this.live?.runtime.dispose();
    this.emptyRuntime?.dispose();
    await this.db.close();
  }
}
