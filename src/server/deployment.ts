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
import { AuthConfigError, type AuthProvider, evaluateAuthConfig } from "../functions/authConfig.js";
import { CronRunner, type CronSpec, parseCrons } from "../functions/crons.js";
import { EnvironmentCache, ensureEnvironmentTable } from "../functions/environment.js";
import { FunctionRunner, type MutationCounters } from "../functions/runner.js";
import { JobExecutor, type JobTarget } from "../functions/scheduler.js";
import { applySchemaIndexes, evaluateSchema, type Schema } from "../functions/schema.js";
import { SchemaGuard } from "../functions/schemaGuard.js";
import type { FileStorage } from "../functions/storage.js";
import { TokenError, TokenVerifier, type TokenVerifierOptions } from "../functions/userTokens.js";
import { SqlitePersistence } from "../persistence/index.js";
import { AppRuntime } from "../runtime/appRuntime.js";
import { bundleAuthConfig, bundleConvexDir, bundleSchema } from "../runtime/bundler.js";
import { linkModules } from "../runtime/loader.js";
import { type ModuleSource, modulePathOf } from "../runtime/modules.js";
import { NodeExecutor, writeNodeModules } from "../runtime/nodeExecutor.js";
import { installNodePackages, type NodePackage } from "../runtime/nodePackages.js";
import {
  AuthenticationError,
  type Authenticator,
  type SyncLimits,
  SyncService,
  type VerifiedUser,
} from "../sync/service.js";
import { CodeStore, importSeedOf, newImportSeed, type StoredApp } from "./codeStore.js";
import { FunctionLogs } from "./functionLogs.js";
import { openFileStorage } from "./storage.js";

export interface DeploymentOptions {
  dataDir: string;
  /** The app's `convex/` folder to serve. */
  convexDir?: string;
  /** Admin key; default: `TESSERA_ADMIN_KEY`, else generated once and kept in the data dir. */
  adminKey?: string;
  syncLimits?: Partial<SyncLimits>;
  /** How long a replaced app keeps running what it started (default `RETIRE_AFTER_MS`). */
  retireAfterMs?: number;
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

/**
 * Admin keys, and user tokens (JWTs) checked against the auth providers of
 * the app being served (`providers`, asked for each token: they change with
 * pushes and environment variables).
 */
export class DeploymentAuthenticator implements Authenticator {
  private readonly verifier: TokenVerifier;

  constructor(
    private readonly adminKey: string,
    private readonly providers: () => Promise<readonly AuthProvider[]> = async () => [],
    verifierOptions: TokenVerifierOptions = {},
  ) {
    this.verifier = new TokenVerifier(verifierOptions);
  }

  isAdminKey(key: string): boolean {
    const a = Buffer.from(key);
    const b = Buffer.from(this.adminKey);
    // Compare in constant time; the length check leaks only the length.
    return a.length === b.length && timingSafeEqual(a, b);
  }

  async verifyUserToken(token: string): Promise<VerifiedUser> {
    const providers = await this.providers();
    try {
      return await this.verifier.verify(token, providers);
    } catch (e) {
      if (e instanceof TokenError) throw new AuthenticationError(e.message);
      throw e;
    }
  }
}

/** An app ready to serve: its runtime (modules loaded and analysed) and schema. */
export interface PreparedApp {
  stored: StoredApp;
  runtime: AppRuntime;
  /** Isolates for its actions (none if it has no actions): long actions never hold up queries. */
  actionRuntime: AppRuntime | null;
  /** The Node.js runtime of its "use node" modules, if any. */
  nodeExecutor: NodeExecutor | null;
  /** Its `crons.ts` jobs. */
  crons: CronSpec[];
  schema: Schema | null;
  /**
   * The auth providers of its `auth.config.ts`, when they were evaluated
   * while preparing (with the environment `authEnvironmentKey` describes);
   * null: evaluated when a token first needs them.
   */
  authProviders: AuthProvider[] | null;
  authEnvironmentKey: string | null;
}

/** A push or folder the deployment cannot serve; the message is for whoever sent it. */
export class AppRejectedError extends Error {
  override name = "AppRejectedError";
  constructor(
    message: string,
    /** The error code for the CLI (HTTP `{code, message}`). */
    readonly code = "InvalidModules",
  ) {
    super(message);
  }
}

export interface PrepareOptions {
  /** `process.env` for `auth.config.ts`: when given, the auth config is evaluated (and must be valid). */
  authEnvironment?: Readonly<Record<string, string>>;
  /** Where "use node" modules are written for the Node.js runtime (required if the app has any). */
  nodeDir?: string;
}

/** Loads and analyses an app without serving it (the caller disposes `runtime` if unused). */
export async function prepareApp(
  stored: StoredApp,
  options: PrepareOptions = {},
): Promise<PreparedApp> {
  const nodeModules = stored.modules.filter((m) => m.environment === "node");
  let nodeExecutor: NodeExecutor | null = null;
  if (nodeModules.length > 0)
    nodeExecutor = await startNodeRuntime(
      nodeModules,
      options.nodeDir,
      stored.nodeDependencies ?? [],
    );
  try {
    return await prepareIsolateApp(stored, options, nodeExecutor);
  } catch (e) {
    nodeExecutor?.dispose();
    throw e;
  }
}

/** Starts the Node.js runtime of an app's "use node" modules, which may define only actions. */
async function startNodeRuntime(
  modules: ModuleSource[],
  nodeDir: string | undefined,
  packages: readonly NodePackage[],
): Promise<NodeExecutor> {
  if (nodeDir === undefined) throw new Error("prepareApp: an app with Node modules needs nodeDir");
  let packagesDir: string | null = null;
  if (packages.length > 0) {
    try {
      packagesDir = await installNodePackages(join(nodeDir, "packages"), packages);
    } catch (e) {
      throw new AppRejectedError(
        `Failed to install the external packages of "use node" actions: ${errorMessage(e)}`,
      );
    }
  }
  // Entry modules (not the shared chunks under _deps/).
  const entries = modules.map((m) => m.path).filter((p) => !p.startsWith("_deps/"));
  let executor: NodeExecutor;
  try {
    executor = await NodeExecutor.start(writeNodeModules(nodeDir, modules, packagesDir), entries);
  } catch (e) {
    throw new AppRejectedError(errorMessage(e));
  }
  const wrong = executor.modules.flatMap((m) =>
    m.functions.filter((f) => f.kind !== "action").map((f) => `${m.path}:${f.name} (${f.kind})`),
  );
  if (wrong.length > 0) {
    executor.dispose();
    throw new AppRejectedError(
      `"use node" files may only define actions; these are not: ${wrong.join(", ")}`,
    );
  }
  return executor;
}

async function prepareIsolateApp(
  stored: StoredApp,
  options: PrepareOptions,
  nodeExecutor: NodeExecutor | null,
): Promise<PreparedApp> {
  let schema: Schema | null = null;
  let runtime: AppRuntime;
  try {
    schema = stored.schema === null ? null : await evaluateSchema(stored.schema);
  } catch (e) {
    throw new AppRejectedError(`Failed to evaluate schema.ts: ${errorMessage(e)}`);
  }
  let authProviders: AuthProvider[] | null = null;
  let authEnvironmentKey: string | null = null;
  if (options.authEnvironment !== undefined) {
    authEnvironmentKey = environmentKey(options.authEnvironment);
    authProviders = [];
    if (stored.authConfig !== null) {
      try {
        authProviders = await evaluateAuthConfig(stored.authConfig, options.authEnvironment);
      } catch (e) {
        if (e instanceof AuthConfigError) throw new AppRejectedError(e.message, e.code);
        throw e;
      }
    }
  }
  // Both runtimes import the modules with the clock and seed of the push,
  // also after a restart: module-level values never change under an app.
  const importOptions = { importTimeMs: stored.pushedAtMs, importSeed: importSeedOf(stored) };
  let linked: Awaited<ReturnType<typeof linkModules>>;
  try {
    linked = await linkModules(stored.modules);
    runtime = await AppRuntime.create(linked, importOptions);
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
  let crons: CronSpec[];
  try {
    crons = await evaluateCrons(runtime);
  } catch (e) {
    runtime.dispose();
    throw e;
  }
  let actionRuntime: AppRuntime | null = null;
  if (
    linked.modulePaths.includes("http.js") ||
    runtime.modules.some((m) =>
      m.functions.some((f) => f.kind === "action" || f.kind === "httpAction"),
    )
  ) {
    try {
      actionRuntime = await AppRuntime.create(linked, {
        ...importOptions,
        isolates: ACTION_ISOLATES,
        warmContexts: 1,
        // An action may change anything at any time: a fresh context each.
        contextReuse: false,
      });
    } catch (e) {
      runtime.dispose();
      throw new AppRejectedError(errorMessage(e));
    }
  }
  return {
    stored,
    runtime,
    actionRuntime,
    nodeExecutor,
    crons,
    schema,
    authProviders,
    authEnvironmentKey,
  };
}

/** The app's `crons.ts` jobs, each checked (schedule, and a mutation or action to run). */
async function evaluateCrons(runtime: AppRuntime): Promise<CronSpec[]> {
  let json: string | null;
  try {
    json = await runtime.evaluateOnce<string | null>(
      `(() => { const m = __tessera_app.modules["crons.js"]; if (m === undefined || m.default === undefined) return null; const c = m.default; if (c === null || c.isCrons !== true || typeof c.export !== "function") throw new Error("crons.ts must export default cronJobs() (from convex/server)"); return c.export(); })()`,
    );
  } catch (e) {
    throw new AppRejectedError(`Failed to read crons.ts: ${errorMessage(e)}`);
  }
  if (json === null) return [];
  let crons: CronSpec[];
  try {
    crons = parseCrons(json);
  } catch (e) {
    throw new AppRejectedError(errorMessage(e));
  }
  for (const cron of crons) {
    const { module, exportName } = modulePathOf(cron.name);
    const kind = runtime.functionSpec(module, exportName)?.kind;
    if (kind !== "mutation" && kind !== "action")
      throw new AppRejectedError(
        kind === undefined
          ? `Cron ${JSON.stringify(cron.identifier)} runs ${cron.name}, which does not exist`
          : `Cron ${JSON.stringify(cron.identifier)} runs ${cron.name}, a ${kind}: crons run mutations and actions`,
      );
  }
  return crons;
}

/** Scheduled functions running at once: a burst of jobs never starves client requests. */
const SCHEDULED_CONCURRENCY = 64;

/** Actions running at once (each holds an isolate while it awaits); more wait their turn. */
const ACTION_ISOLATES = 4;

/** Disposes an app's runtimes. */
export function disposeApp(app: PreparedApp): void {
  app.runtime.dispose();
  app.actionRuntime?.dispose();
  app.nodeExecutor?.dispose();
}

/** Identifies an environment (for knowing when the auth config must be evaluated again). */
function environmentKey(env: Readonly<Record<string, string>>): string {
  return JSON.stringify(
    Object.keys(env)
      .sort()
      .map((k) => [k, env[k]]),
  );
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The app of a `convex/` folder, bundled the way the official CLI bundles it. */
export async function appFromFolder(convexDir: string): Promise<StoredApp> {
  return {
    modules: [...(await bundleConvexDir(convexDir))],
    schema: await bundleSchema(convexDir),
    authConfig: await bundleAuthConfig(convexDir),
    udfServerVersion: "folder",
    functions: "convex/",
    pushedAtMs: Date.now(),
    importSeed: newImportSeed(),
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
  /** Mutation commits and conflicts since the process started (`GET /api/tessera/metrics`). */
  readonly mutationCounters: MutationCounters = { committed: 0, conflicts: 0 };
  /** Runs scheduled functions when they fall due. */
  readonly jobs: JobExecutor;
  /** Turns the live app's crons into scheduled functions. */
  readonly crons: CronRunner;
  /** Environment variables for `process.env`, shared by every app version. */
  private readonly environment: EnvironmentCache;
  /** Where clients reach this deployment (set once the servers listen). */
  urls = { cloud: "", site: "" };
  private live: PreparedApp | null;
  /** Apps replaced by a newer one, still running what they started until they are disposed (by their timer). */
  private readonly retiring = new Map<PreparedApp, NodeJS.Timeout>();
  private readonly retiredListeners = new Set<() => void>();
  private retireAfterMs = RETIRE_AFTER_MS;
  private runnerRef: FunctionRunner;
  /**
   * The live app's schema, held on commits its runner did not check as they
   * were written: the previous app's mutations that finish after a push, and
   * writers that are not functions.
   */
  private schemaGuard: SchemaGuard | null = null;

  private constructor(
    readonly db: Database,
    readonly adminKey: string,
    readonly dataDir: string,
    live: PreparedApp | null,
    empty: AppRuntime,
    syncLimits: Partial<SyncLimits> | undefined,
    /** `ctx.storage`: the `_storage` table and the files under `DIR/files/`. */
    readonly files: FileStorage,
  ) {
    this.auth = new DeploymentAuthenticator(adminKey, () => this.authProviders());
    this.codeStore = new CodeStore(dataDir);
    this.environment = new EnvironmentCache(db);
    // One target for every job (made per job, its closures cost more than the
    // job's bookkeeping); it calls whichever runner is live then.
    const jobTarget: JobTarget = {
      kindOf: (path) => this.runnerRef.kindOf(path),
      mutation: (path, args, finish) =>
        this.runnerRef.mutation(path, args, { allowInternal: true, beforeCommit: finish }),
      action: (path, args) => this.runnerRef.action(path, args, { allowInternal: true }),
    };
    this.jobs = new JobExecutor(
      db,
      () => jobTarget,
      SCHEDULED_CONCURRENCY,
      (e) => process.stderr.write(`tessera: scheduler: ${e instanceof Error ? e.message : e}\n`),
    );
    this.crons = new CronRunner(db, (e) =>
      process.stderr.write(`tessera: crons: ${e instanceof Error ? e.message : e}\n`),
    );
    this.live = live;
    this.guardSchema(live?.schema ?? null);
    this.runnerRef = this.runnerFor(
      live?.runtime ?? empty,
      live?.schema ?? null,
      live?.actionRuntime ?? null,
      live?.nodeExecutor ?? null,
    );
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
      persistence: new SqlitePersistence({
        path: join(options.dataDir, "tessera.sqlite"),
        checkpointerAtOpen: true,
      }),
    });
    let live: PreparedApp | null = null;
    let files: FileStorage | null = null;
    try {
      await ensureEnvironmentTable(db);
      files = await openFileStorage(db, options.dataDir);
      const stored =
        options.convexDir !== undefined
          ? await appFromFolder(options.convexDir)
          : new CodeStore(options.dataDir).load();
      if (stored !== null) {
        live = await prepareApp(stored, { nodeDir: join(options.dataDir, "node") });
      }
      await applySchemaIndexes(db, live?.schema ?? null);
      const empty = await AppRuntime.create(await linkModules([]), {
        isolates: 1,
        warmContexts: 0,
      });
      const deployment = new Deployment(
        db,
        adminKey,
        options.dataDir,
        live,
        empty,
        options.syncLimits,
        files,
      );
      if (options.retireAfterMs !== undefined) deployment.retireAfterMs = options.retireAfterMs;
      // Jobs that fell due while the deployment was down run now.
      await deployment.jobs.start();
      await deployment.crons.register(live?.crons ?? []);
      return deployment;
    } catch (e) {
      if (live !== null) disposeApp(live);
      files?.close();
      await db.close();
      throw e;
    }
  }

  /** The live app and the replaced ones still running what they started. */
  get servingApps(): PreparedApp[] {
    const retiring = [...this.retiring.keys()];
    return this.live === null ? retiring : [this.live, ...retiring];
  }

  /** Calls `listener` each time a replaced app has been disposed. Returns a function that removes it. */
  onRetired(listener: () => void): () => void {
    this.retiredListeners.add(listener);
    return () => this.retiredListeners.delete(listener);
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

  /**
   * `process.env` for `auth.config.ts`: the environment variables, and
   * `CONVEX_CLOUD_URL` / `CONVEX_SITE_URL` (once the servers listen).
   */
  async authEnvironment(): Promise<Record<string, string>> {
    const values = this.environment.current ?? (await this.environment.load());
    const env: Record<string, string> = { ...values };
    if (this.urls.cloud !== "") env.CONVEX_CLOUD_URL = this.urls.cloud;
    if (this.urls.site !== "") env.CONVEX_SITE_URL = this.urls.site;
    return env;
  }

  /** The live app's auth config, as last evaluated, and with what. */
  private authMemo: {
    app: PreparedApp;
    values: Record<string, string> | null;
    cloud: string;
    site: string;
    key: string;
    providers: Promise<AuthProvider[]>;
  } | null = null;

  /**
   * The auth providers of the live app: evaluated at push, and again when
   * the environment variables or the deployment's URLs changed since (or,
   * for an app served from a folder or restored at start, on first use).
   */
  async authProviders(): Promise<AuthProvider[]> {
    const app = this.live;
    if (app === null || app.stored.authConfig === null) return [];
    const values = this.environment.current ?? (await this.environment.load());
    const { cloud, site } = this.urls;
    let memo = this.authMemo;
    if (
      memo !== null &&
      memo.app === app &&
      memo.values === values &&
      memo.cloud === cloud &&
      memo.site === site
    )
      return memo.providers;
    const env = await this.authEnvironment();
    const key = environmentKey(env);
    memo = this.authMemo;
    if (memo !== null && memo.app === app && memo.key === key) {
      this.authMemo = { ...memo, values, cloud, site };
      return memo.providers;
    }
    const config = app.stored.authConfig;
    const providers = evaluateAuthConfig(config, env).catch((e: unknown) => {
      throw new AuthenticationError(
        `The deployment's auth.config.ts could not be evaluated, so no token can be verified: ${errorMessage(e)}`,
      );
    });
    providers.catch(() => {});
    this.authMemo = { app, values, cloud, site, key, providers };
    return providers;
  }

  private runnerFor(
    runtime: AppRuntime,
    schema: Schema | null,
    actionRuntime: AppRuntime | null,
    nodeExecutor: NodeExecutor | null = null,
  ): FunctionRunner {
    return new FunctionRunner({
      db: this.db,
      runtime,
      ...(actionRuntime !== null ? { actionRuntime } : {}),
      ...(nodeExecutor !== null ? { nodeExecutor } : {}),
      schema,
      deploymentUrl: () => this.urls.cloud,
      storage: this.files,
      environment: this.environment,
      onExecution: (r) => this.logs.record(r),
      counters: this.mutationCounters,
    });
  }

  /**
   * Serves `app` from now on: new executions run its code, every cached
   * query result is re-run on it (and pushed to subscribers), and the
   * previous app finishes what it started before it is disposed.
   */
  async install(app: PreparedApp): Promise<void> {
    const previous = this.live;
    const previousEmpty = this.emptyRuntime;
    this.live = app;
    this.guardSchema(app.schema);
    if (app.authProviders !== null && app.authEnvironmentKey !== null)
      this.authMemo = {
        app,
        values: null,
        cloud: "",
        site: "",
        key: app.authEnvironmentKey,
        providers: Promise.resolve(app.authProviders),
      };
    this.emptyRuntime = null;
    this.runnerRef = this.runnerFor(app.runtime, app.schema, app.actionRuntime, app.nodeExecutor);
    this.sync.setRunner(this.runnerRef);
    // Calls it started may still be running: it answers them "not found".
    if (previousEmpty !== null)
      setTimeout(() => previousEmpty.dispose(), this.retireAfterMs).unref();
    if (previous !== null && previous !== app) {
      const timer = setTimeout(() => {
        this.retiring.delete(previous);
        disposeApp(previous);
        for (const listener of this.retiredListeners) listener();
      }, this.retireAfterMs);
      timer.unref();
      this.retiring.set(previous, timer);
    }
    await this.crons.register(app.crons);
  }

  private guardSchema(schema: Schema | null): void {
    this.schemaGuard?.dispose();
    this.schemaGuard = schema === null ? null : new SchemaGuard(this.db, schema, "enforce");
  }

  async close(): Promise<void> {
    this.schemaGuard?.dispose();
    this.crons.close();
    this.jobs.close();
    this.logs.close();
    this.sync.close();
    this.environment.close();
    this.files.close();
    if (this.live !== null) disposeApp(this.live);
    for (const [app, timer] of this.retiring) {
      clearTimeout(timer);
      disposeApp(app);
    }
    this.retiring.clear();
    this.emptyRuntime?.dispose();
    await this.db.close();
  }
}
