/**
 * Processes the benchmark starts: a `tessera serve` of the bench app on free
 * ports and a fresh or given data dir, and helpers to start and stop others.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startPostgres } from "./postgres.js";

const APP = join(import.meta.dirname, "app", "convex");
/** `--import` it to run a TypeScript entry point (helper servers run their TypeScript as Tessera does). */
export const TS_REGISTER = join(import.meta.dirname, "..", "bin", "ts-register.mjs");
/** The Swaghaus example's functions plus a stocking mutation (comparison sections). */
export const STORE_APP = join(import.meta.dirname, "store", "convex");
const BIN = join(import.meta.dirname, "..", "bin", "tessera.js");

export interface Proc {
  child: ChildProcess;
  /** First line matching the pattern's group. */
  value: string;
}

export function startProcess(cmd: string, args: string[], pattern: RegExp): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    // A benchmark that dies (or is interrupted, see run.ts) leaves no process behind.
    const orphaned = () => child.kill("SIGTERM");
    process.once("exit", orphaned);
    child.once("exit", () => process.off("exit", orphaned));
    let out = "";
    let err = "";
    const timer = setTimeout(
      () => reject(new Error(`process did not start: ${out}${err}`)),
      60_000,
    );
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = pattern.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, value: m[1]! });
      }
    });
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`process exited (${code}): ${out}${err}`));
    });
  });
}

/**
 * The comparison sections' two servers: `tessera serve` of the store app on
 * a fresh data dir, and a PostgreSQL cluster; `stop` ends both and removes
 * the data dir.
 */
export async function startComparisonServers(log: (s: string) => void) {
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-store-"));
  const server = await startServer(dir, STORE_APP);
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  const postgres = await startPostgres(log).catch(async (e: unknown) => {
    await stop(server);
    removeDir();
    throw e;
  });
  return {
    dir,
    server,
    postgres,
    async stop() {
      await postgres.stop();
      await stop(server);
      removeDir();
    },
  };
}

export function startServer(dir: string, convexDir = APP): Promise<Proc> {
  return startProcess(
    process.execPath,
    [BIN, "serve", "--port", "0", "--site-port", "0", "--data-dir", dir, "--convex-dir", convexDir],
    /API URL:\s+(\S+)/,
  );
}

/** A process and its live descendants. */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number) => {
    out.push(p);
    try {
      const children = readFileSync(`/proc/${p}/task/${p}/children`, "utf8").trim();
      for (const c of children.split(/\s+/).filter(Boolean)) visit(Number(c));
    } catch {
      // gone meanwhile
    }
  };
  visit(pid);
  return out;
}

let ticksPerSecond: number | null = null;

/**
 * CPU time (user + system, seconds) a process and its descendants have used,
 * including descendants that already exited (PostgreSQL backends come and go).
 */
export function cpuSecondsOfTree(pid: number): number {
  ticksPerSecond ??= Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      // The fields after the command name (which may hold spaces) start at state (field 3);
      // utime, stime, cutime and cstime are fields 14–17.
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      for (let i = 11; i <= 14; i++) ticks += Number(f[i]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / ticksPerSecond;
}

/** Resident memory of a process and its descendants, in bytes. */
export function rssOfTree(pid: number): number {
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, "utf8"));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

export async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode !== null) return;
  const done = new Promise((r) => p.child.once("exit", r));
  p.child.kill("SIGTERM");
  await done;
}
