/**
 * One deployment served by this process: its database in the data directory,
 * the app code it runs, and the sync service on top. Code arrives from a
 * `convex/` folder bundled at start (`--convex-dir`); pushes from the
 * official CLI arrive with the deploy workflow.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Database } from "../database/index.js";
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

export class Deployment {
  readonly auth: DeploymentAuthenticator;

  private constructor(
    readonly db: Database,
    readonly runtime: AppRuntime | null,
    readonly runner: FunctionRunner | null,
    readonly sync: SyncService | null,
    readonly adminKey: string,
    readonly schema: Schema | null,
  ) {
    this.auth = new DeploymentAuthenticator(adminKey);
  }

  static async open(options: DeploymentOptions): Promise<Deployment> {
    mkdirSync(options.dataDir, { recursive: true });
    const adminKey = resolveAdminKey(options.dataDir, options.adminKey);
    const db = await Database.open({
      persistence: new SqlitePersistence({ path: join(options.dataDir, "tessera.sqlite") }),
    });
    try {
      if (options.convexDir === undefined)
        return new Deployment(db, null, null, null, adminKey, null);
      const schemaModule = await bundleSchema(options.convexDir);
      const schema = schemaModule === null ? null : await evaluateSchema(schemaModule);
      if (schema !== null) await applySchemaIndexes(db, schema);
      const runtime = await AppRuntime.create(
        await linkModules(await bundleConvexDir(options.convexDir)),
      );
      const runner = new FunctionRunner({ db, runtime, schema });
      const sync = new SyncService({
        db,
        runner,
        auth: new DeploymentAuthenticator(adminKey),
        ...(options.syncLimits ? { limits: options.syncLimits } : {}),
      });
      return new Deployment(db, runtime, runner, sync, adminKey, schema);
    } catch (e) {
      await db.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    this.sync?.close();
    this.runtime?.dispose();
    await this.db.close();
  }
}
