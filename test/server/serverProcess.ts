/**
 * Starts a real `tessera serve` process for the server integration tests: on
 * a free port (or a given one), a temporary data directory and the fixture
 * app, and stops it again. Also a TCP proxy the tests can cut to drop every
 * connection between the clients and the server.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dirname, "../..");
export const fixtureConvexDir = join(root, "test/fixtures/app/convex");

export interface ServerProcess {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** Where HTTP actions are served. */
  siteUrl: string;
  port: number;
  adminKey: string;
  dataDir: string;
  /** The launcher's process ID (bin/tessera.js; the server is its child, in its process group). */
  pid: number;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  /** Stops the process (SIGTERM, then SIGKILL) and waits for it to exit. */
  stop(): Promise<void>;
  /** `stop`, then removes the data directory (unless it was given). */
  dispose(): Promise<void>;
}

export interface StartOptions {
  port?: number;
  dataDir?: string;
  adminKey?: string;
  /** The convex/ folder to serve (default: the fixture app); null: none (code arrives by push). */
  convexDir?: string | null;
  /** Extra environment variables for the server. */
  env?: Record<string, string>;
}

const STARTUP_TIMEOUT_MS = 45_000;

export async function startServer(options: StartOptions = {}): Promise<ServerProcess> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "tessera-server-"));
  const args = [
    join(root, "bin/tessera.js"),
    "serve",
    "--port",
    String(options.port ?? 0),
    "--data-dir",
    dataDir,
    "--site-port",
    "0",
  ];
  if (options.convexDir !== null) args.push("--convex-dir", options.convexDir ?? fixtureConvexDir);
  if (options.adminKey !== undefined) args.push("--admin-key", options.adminKey);
  // Its own process group: the launcher starts a child, and a forced stop ends both.
  const child = spawn(process.execPath, args, {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TESSERA_ADMIN_KEY: "", ...options.env },
  });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let running = true;
  void exited.then(() => {
    running = false;
  });

  const stop = async () => {
    if (!running) return;
    signal(child, "SIGTERM");
    const timer = setTimeout(() => signal(child, "SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
    // The launcher is gone; make sure its child is too.
    signal(child, "SIGKILL");
  };

  try {
    const ready = await new Promise<{ url: string; siteUrl: string; adminKey: string }>(
      (resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`server did not start in time:\n${out}`)),
          STARTUP_TIMEOUT_MS,
        );
        const check = () => {
          const url = /API URL:\s+(\S+)/.exec(out)?.[1];
          const siteUrl = /site URL:\s+(\S+)/.exec(out)?.[1];
          const key = /admin key:\s+(\S+)/.exec(out)?.[1];
          if (url !== undefined && key !== undefined && siteUrl !== undefined) {
            clearTimeout(timer);
            resolve({ url, siteUrl, adminKey: key });
          }
        };
        child.stdout!.on("data", check);
        child.once("exit", (code, sig) => {
          clearTimeout(timer);
          reject(new Error(`server exited (${code ?? sig}) before it was ready:\n${out}`));
        });
      },
    );
    const port = Number(new URL(ready.url).port);
    return {
      url: ready.url,
      siteUrl: ready.siteUrl,
      port,
      adminKey: ready.adminKey,
      dataDir,
      pid: child.pid!,
      output: () => out,
      stop,
      async dispose() {
        await stop();
        if (ownDir) rmSync(dataDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await stop();
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
}

function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    // The whole group this test started (the launcher and the server it runs).
    process.kill(-child.pid, sig);
  } catch {
    // Already gone.
  }
}

/** A TCP proxy in front of `targetPort` whose connections the test can cut. */
export interface CuttableProxy {
  url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections open now. */
  readonly connections: number;
  /** Open connections stop passing the server's bytes on to the client (they are dropped). */
  holdResponses(): void;
  /** Destroys every open connection (both sides), as a network failure would; returns how many. */
  cut(): number;
  close(): Promise<void>;
}

interface Link {
  client: Socket;
  upstream: Socket;
  held: boolean;
}

export async function startProxy(targetPort: number): Promise<CuttableProxy> {
  const links = new Set<Link>();
  let accepted = 0;
  const server: Server = createServer((client) => {
    accepted++;
    const upstream = createConnection({ port: targetPort, host: "127.0.0.1" });
    const link: Link = { client, upstream, held: false };
    links.add(link);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      links.delete(link);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.on("data", (d: Buffer) => {
      upstream.write(d);
    });
    upstream.on("data", (d: Buffer) => {
      if (!link.held) client.write(d);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const destroyAll = () => {
    const n = links.size;
    for (const l of [...links]) {
      l.client.destroy();
      l.upstream.destroy();
    }
    links.clear();
    return n;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    get connections() {
      return links.size;
    },
    holdResponses() {
      for (const l of links) l.held = true;
    },
    cut: destroyAll,
    async close() {
      destroyAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
