/**
 * `tessera serve`: opens (or creates) a deployment in the data directory and
 * serves it on the API port until SIGINT/SIGTERM, which finish the commits
 * in flight before exiting.
 */
import { resolve } from "node:path";
import { Deployment } from "../server/deployment.js";
import { ApiServer } from "../server/server.js";
import { SiteServer } from "../server/siteServer.js";

export interface ServeFlags {
  port: number;
  sitePort: number;
  host: string;
  dataDir: string;
  adminKey?: string;
  convexDir?: string;
}

export class UsageError extends Error {}

const SERVE_USAGE = `Usage: tessera serve [--port P] [--site-port S] [--data-dir DIR] [--admin-key KEY] [--host H] [--convex-dir DIR]

  --port P          API port (default 3210; 0 picks a free port)
  --site-port S     site port for HTTP actions (default 3211; 0 picks a free port)
  --data-dir DIR    where the deployment's data lives (default ./.tessera)
  --admin-key KEY   admin key (default: TESSERA_ADMIN_KEY, else generated once and kept in DIR)
  --host H          interface to listen on (default 127.0.0.1)
  --convex-dir DIR  serve the functions of this convex/ folder (bundled at start)
`;

function portOf(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535)
    throw new UsageError(`${flag} must be a port number (0-65535), got ${JSON.stringify(value)}`);
  return n;
}

export function parseServeFlags(argv: string[]): ServeFlags {
  const flags: ServeFlags = { port: 3210, sitePort: 3211, host: "127.0.0.1", dataDir: ".tessera" };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const takeValue = (): string => {
      if (eq > 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${name} needs a value`);
      return v;
    };
    switch (name) {
      case "--port":
        flags.port = portOf(name, takeValue());
        break;
      case "--site-port":
        flags.sitePort = portOf(name, takeValue());
        break;
      case "--host":
        flags.host = takeValue();
        break;
      case "--data-dir":
        flags.dataDir = takeValue();
        break;
      case "--admin-key":
        flags.adminKey = takeValue();
        break;
      case "--convex-dir":
        flags.convexDir = takeValue();
        break;
      case "--help":
      case "-h":
        throw new UsageError("");
      default:
        throw new UsageError(`unknown flag ${JSON.stringify(arg)}`);
    }
  }
  return flags;
}

/** Opens the deployment of `flags` and serves it; the caller closes both. */
export async function startDeployment(
  flags: ServeFlags,
): Promise<{ deployment: Deployment; server: ApiServer; site: SiteServer }> {
  const deployment = await Deployment.open({
    dataDir: resolve(flags.dataDir),
    ...(flags.convexDir !== undefined ? { convexDir: resolve(flags.convexDir) } : {}),
    ...(flags.adminKey !== undefined ? { adminKey: flags.adminKey } : {}),
  });
  let site: SiteServer | null = null;
  try {
    site = await SiteServer.start(deployment, { port: flags.sitePort, host: flags.host });
    const server = await ApiServer.start(deployment, {
      port: flags.port,
      host: flags.host,
      siteUrl: site.url,
    });
    return { deployment, server, site };
  } catch (e) {
    await site?.close();
    await deployment.close();
    throw e;
  }
}

export async function serve(argv: string[]): Promise<number> {
  let flags: ServeFlags;
  try {
    flags = parseServeFlags(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message !== "") process.stderr.write(`tessera serve: ${e.message}\n\n`);
    process.stderr.write(SERVE_USAGE);
    return e.message === "" ? 0 : 2;
  }
  const { deployment, server, site } = await startDeployment(flags);
  process.stdout.write(
    `Tessera is serving the deployment in ${resolve(flags.dataDir)}\n` +
      `  API URL:   ${server.url}\n` +
      `  site URL:  ${site.url}\n` +
      `  admin key: ${deployment.adminKey}\n` +
      (deployment.app === null
        ? "  no functions yet: push them with the official CLI, e.g.\n" +
          `    CONVEX_SELF_HOSTED_URL=${server.url} CONVEX_SELF_HOSTED_ADMIN_KEY='${deployment.adminKey}' npx convex deploy\n`
        : ""),
  );
  return new Promise<number>((resolveExit) => {
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      process.stdout.write(`${signal}: finishing in-flight commits and stopping\n`);
      await server.close();
      await site.close();
      await deployment.close();
      resolveExit(0);
    };
    process.on("SIGINT", () => void stop("SIGINT"));
    process.on("SIGTERM", () => void stop("SIGTERM"));
  });
}
