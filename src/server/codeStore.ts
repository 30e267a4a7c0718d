/**
 * The app code a deployment serves, kept in its data directory so that a
 * restart serves what was last pushed. Each pushed app is one JSON file named
 * by its content hash; `code/current` names the live one. Switching writes the
 * app file and then replaces `current` with a rename, both synced to disk, so
 * a crash leaves either the old or the new app live, never a mix.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { ModuleSource } from "../runtime/modules.js";

/** An app as pushed: its modules (paths relative to the functions folder) and configuration. */
export interface StoredApp {
  modules: ModuleSource[];
  /** The bundled `schema.js`, or null without a schema. */
  schema: ModuleSource | null;
  /** The bundled `auth.config.js`, if the app has one. */
  authConfig: ModuleSource | null;
  /** The `convex` package version that built the push. */
  udfServerVersion: string;
  /** The functions folder (`convex.json` "functions", e.g. `convex/`). */
  functions: string;
  /** When it was pushed (ms since the epoch): `Date.now()` while its modules import. */
  pushedAtMs: number;
  /**
   * The seed of `Math.random` while its modules import, drawn at the push so
   * that every import of this app, also after a restart, sees the same values
   * (absent from apps stored before it was kept: see `importSeedOf`).
   */
  importSeed?: string;
  /** External packages its "use node" modules import (installed from npm). */
  nodeDependencies?: { name: string; version: string }[];
}

const FORMAT = 1;

/** A new app's import seed. */
export function newImportSeed(): string {
  return randomBytes(16).toString("hex");
}

/** The seed `app`'s modules import with: its own, or one derived from its content for an app stored without one. */
export function importSeedOf(app: StoredApp): string {
  if (app.importSeed !== undefined) return app.importSeed;
  const hash = createHash("sha256").update(String(app.pushedAtMs));
  for (const m of app.modules) hash.update(m.path).update(moduleHash(m));
  return hash.digest("hex").slice(0, 32);
}

/** How the official CLI fingerprints a module (sha256 of source then source map, hex). */
export function moduleHash(m: { source: string; sourceMap?: string }): string {
  return createHash("sha256")
    .update(m.source)
    .update(m.sourceMap ?? "")
    .digest("hex");
}

export class CodeStore {
  private readonly dir: string;

  constructor(dataDir: string) {
    this.dir = join(dataDir, "code");
  }

  /** The live app, or null if nothing was pushed yet. */
  load(): StoredApp | null {
    const pointer = join(this.dir, "current");
    if (!existsSync(pointer)) return null;
    const name = readFileSync(pointer, "utf8").trim();
    if (!/^app-[0-9a-f]{64}\.json$/.test(name))
      throw new Error(`The code pointer ${pointer} is corrupt (${JSON.stringify(name)})`);
    const parsed = JSON.parse(readFileSync(join(this.dir, name), "utf8")) as {
      format: number;
      app: StoredApp;
    };
    if (parsed.format !== FORMAT)
      throw new Error(
        `Stored app ${name} has format ${parsed.format}; this Tessera reads ${FORMAT}`,
      );
    return parsed.app;
  }

  /** Makes `app` the live app (durably). */
  save(app: StoredApp): void {
    mkdirSync(this.dir, { recursive: true });
    const text = JSON.stringify({ format: FORMAT, app });
    const name = `app-${createHash("sha256").update(text).digest("hex")}.json`;
    writeDurably(join(this.dir, name), text);
    writeDurably(join(this.dir, "current.tmp"), `${name}\n`);
    renameSync(join(this.dir, "current.tmp"), join(this.dir, "current"));
    syncDirectory(this.dir);
  }
}

function writeDurably(path: string, text: string): void {
  const fd = openSync(path, "w", 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
