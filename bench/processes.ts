/**
 * Processes the benchmark starts: a `tessera serve` of the bench app on free
 * ports and a fresh or given data dir, and helpers to start and stop others.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

const APP = join(import.meta.dirname, "app", "convex");
const BIN = join(import.meta.dirname, "..", "bin", "tessera.js");

export interface Proc {
  child: ChildProcess;
  /** First line matching the pattern's group. */
  value: string;
}

export function startProcess(cmd: string, args: string[], pattern: RegExp): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
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

export function startServer(dir: string): Promise<Proc> {
  return startProcess(
    process.execPath,
    [BIN, "serve", "--port", "0", "--site-port", "0", "--data-dir", dir, "--convex-dir", APP],
    /API URL:\s+(\S+)/,
  );
}

export async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode !== null) return;
  const done = new Promise((r) => p.child.once("exit", r));
  p.child.kill("SIGTERM");
  await done;
}
