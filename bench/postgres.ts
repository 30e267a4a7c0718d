/**
 * A throwaway PostgreSQL cluster for the comparisons: Debian's PostgreSQL 15
 * (installed with apt-get when it is missing, which the log says), a fresh
 * cluster in a temporary directory on a free loopback port, durable commits
 * (fsync and synchronous_commit on, the defaults), stopped and removed after.
 * initdb refuses to run as root, so as root the cluster belongs to the
 * `postgres` user the Debian package creates.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const VERSION = "15";

export interface Postgres {
  port: number;
  /** Connection settings for `pg`. */
  config: { host: string; port: number; user: string; database: string };
  /** PID of the postmaster (its backends are its children). */
  pid: number;
  stop(): Promise<void>;
}

function binDir(): string | null {
  const preferred = `/usr/lib/postgresql/${VERSION}/bin`;
  if (existsSync(join(preferred, "postgres"))) return preferred;
  if (!existsSync("/usr/lib/postgresql")) return null;
  for (const v of readdirSync("/usr/lib/postgresql").sort().reverse()) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (existsSync(join(dir, "postgres"))) return dir;
  }
  return null;
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The PostgreSQL binaries, installing Debian's package first when they are missing. */
export function ensurePostgres(log: (s: string) => void): string {
  const found = binDir();
  if (found !== null) return found;
  log(`PostgreSQL not found: installing postgresql-${VERSION} from Debian's packages (apt-get)…`);
  const sudo = isRoot() ? [] : ["sudo"];
  const run = (args: string[]) => {
    const [cmd, ...rest] = [...sudo, ...args];
    execFileSync(cmd!, rest, {
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  };
  try {
    run(["apt-get", "update", "-qq"]);
    run(["apt-get", "install", "-y", "-qq", `postgresql-${VERSION}`]);
  } catch (e) {
    throw new Error(
      `could not install postgresql-${VERSION} with apt-get (${e instanceof Error ? e.message : e}); install it and run the benchmark again`,
    );
  }
  const installed = binDir();
  if (installed === null) throw new Error(`postgresql-${VERSION} installed but no binaries found`);
  log(`installed PostgreSQL from Debian's packages (${installed})`);
  return installed;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Runs a PostgreSQL program as the cluster's owner. */
function asOwner(bin: string, args: string[]): [string, string[]] {
  return isRoot() ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
}

export async function startPostgres(log: (s: string) => void): Promise<Postgres> {
  const bin = ensurePostgres(log);
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-pg-"));
  const data = join(dir, "data");
  if (isRoot()) {
    const ids = execFileSync("id", ["-u", "postgres"]).toString().trim();
    const gid = execFileSync("id", ["-g", "postgres"]).toString().trim();
    chownSync(dir, Number(ids), Number(gid));
    chmodSync(dir, 0o700);
  }
  const [initCmd, initArgs] = asOwner(join(bin, "initdb"), [
    "-D",
    data,
    "-U",
    "bench",
    "--auth=trust",
    "-E",
    "UTF8",
    "--locale=C",
  ]);
  execFileSync(initCmd, initArgs, { stdio: ["ignore", "ignore", "pipe"] });
  const port = await freePort();
  const [cmd, args] = asOwner(join(bin, "postgres"), [
    "-D",
    data,
    "-p",
    String(port),
    "-k",
    dir,
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    "max_connections=300",
    "-c",
    "shared_buffers=256MB",
    // Durable commits, as on the Tessera side (these are the defaults; stated so
    // that a changed default cannot quietly make the comparison unfair).
    "-c",
    "fsync=on",
    "-c",
    "synchronous_commit=on",
  ]);
  // The server log goes to a file: a pipe nobody drains (while the benchmark
  // blocks, or when it logs every serialization failure) would stall the server.
  const logPath = join(dir, "server.log");
  const logFd = openSync(logPath, "a", 0o666);
  const child: ChildProcess = spawn(cmd, args, { stdio: ["ignore", "ignore", logFd] });
  closeSync(logFd);
  await new Promise<void>((resolve, reject) => {
    const log = () => readFileSync(logPath, "utf8");
    const timer = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`PostgreSQL did not start: ${log()}`));
    }, 30_000);
    const poll = setInterval(() => {
      if (!log().includes("ready to accept connections")) return;
      clearInterval(poll);
      clearTimeout(timer);
      child.off("exit", exited);
      resolve();
    }, 50);
    const exited = (code: number | null) => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`PostgreSQL exited (${code}): ${log()}`));
    };
    child.once("exit", exited);
  });
  // Under runuser, the postmaster is runuser's child.
  const pid = isRoot() ? childPidOf(child.pid!) : child.pid!;
  // A benchmark that dies (or is interrupted, see run.ts) leaves no server behind.
  const orphaned = () => {
    try {
      process.kill(pid, "SIGQUIT");
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", orphaned);
  return {
    port,
    pid,
    config: { host: "127.0.0.1", port, user: "bench", database: "postgres" },
    async stop() {
      process.off("exit", orphaned);
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        // Fast shutdown: backends are terminated, the cluster is thrown away anyway.
        process.kill(pid, "SIGINT");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The postmaster under `runuser` (which may exec it or run it as its child). */
function childPidOf(pid: number): number {
  if (readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "postgres") return pid;
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
  if (children === "") throw new Error("could not find the postmaster's PID");
  return Number(children.split(/\s+/)[0]);
}
