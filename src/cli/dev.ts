/**
 * `tessera dev`, run in a Convex app's folder: serves a local deployment
 * with its data in the folder (`.tessera/`, git-ignored), writes its URL
 * into `.env.local` where front ends look for it, and runs the app's own
 * official CLI (`convex dev`, self-hosted mode) against it: that bundles,
 * type-checks, generates `convex/_generated`, pushes on every change and
 * tails the function logs. Ctrl-C stops both.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { parseServeFlags, startDeployment, UsageError } from "./serve.js";

const DEV_USAGE = `Usage: tessera dev [--port P] [--site-port S] [--data-dir DIR] [--admin-key KEY] [--host H] [-- <convex dev flags>]

Run in a Convex app's folder (the one with package.json and convex/). Serves a
local deployment (data in DIR, default ./.tessera), writes its URL to .env.local
and runs the app's own \`npx convex dev\` against it; flags after -- go to it
(e.g. -- --once, -- --run items:seed, -- --typecheck disable).
`;

/**
 * The variable the app's front end reads the deployment URL from, by the
 * framework it depends on (one only: the official CLI refuses to touch
 * `.env.local` when it finds several), plus the CLI's own self-hosted pair.
 */
export function envLocalEntries(
  appPackageJson: string,
  url: string,
  adminKey: string,
): Record<string, string> {
  let deps: Record<string, unknown> = {};
  try {
    const pkg = JSON.parse(appPackageJson) as Record<string, Record<string, unknown> | undefined>;
    deps = { ...pkg.devDependencies, ...pkg.dependencies };
  } catch {
    // Not JSON: no framework known.
  }
  const urlVar =
    "next" in deps
      ? "NEXT_PUBLIC_CONVEX_URL"
      : "expo" in deps
        ? "EXPO_PUBLIC_CONVEX_URL"
        : "vite" in deps
          ? "VITE_CONVEX_URL"
          : "CONVEX_URL";
  return {
    [urlVar]: url,
    CONVEX_SELF_HOSTED_URL: url,
    CONVEX_SELF_HOSTED_ADMIN_KEY: adminKey,
  };
}

/**
 * `.env.local` with `entries` set (other lines kept as they were) and
 * `CONVEX_DEPLOYMENT` removed: the official CLI refuses self-hosted mode
 * while it names a cloud deployment.
 */
export function updateEnvLocal(text: string, entries: Record<string, string>): string {
  const lines = text === "" ? [] : text.replace(/\n$/, "").split("\n");
  const seen = new Set<string>();
  const out: string[] = [];
  for (const line of lines) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=/.exec(line);
    const name = m?.[1];
    if (name === "CONVEX_DEPLOYMENT") continue;
    if (name !== undefined && name in entries) {
      if (!seen.has(name)) out.push(`${name}=${entries[name]}`);
      seen.add(name);
      continue;
    }
    out.push(line);
  }
  for (const [name, value] of Object.entries(entries)) {
    if (!seen.has(name)) out.push(`${name}=${value}`);
  }
  return `${out.join("\n")}\n`;
}

/** Adds `entry` to the folder's `.gitignore` unless a line already names it. */
function ignoreInGit(appDir: string, entry: string): void {
  const file = join(appDir, ".gitignore");
  const text = existsSync(file) ? readFileSync(file, "utf8") : "";
  const bare = entry.replace(/^\/|\/$/g, "");
  const listed = text.split("\n").some((l) => l.trim().replace(/^\/|\/$/g, "") === bare);
  if (listed) return;
  const sep = text === "" || text.endsWith("\n") ? "" : "\n";
  writeFileSync(file, `${text}${sep}${entry}\n`);
}

/** The app's own `convex` CLI entry point (its dependency, not ours). */
function convexCli(appDir: string): string {
  const require = createRequire(join(appDir, "package.json"));
  let pkg: string;
  try {
    pkg = require.resolve("convex/package.json");
  } catch {
    throw new UsageError(
      `no \`convex\` package found from ${appDir}: run tessera dev in a Convex app's folder after \`npm install\``,
    );
  }
  return join(dirname(pkg), "bin", "main.js");
}

export async function dev(argv: string[]): Promise<number> {
  const split = argv.indexOf("--");
  const own = split < 0 ? argv : argv.slice(0, split);
  const passThrough = split < 0 ? [] : argv.slice(split + 1);
  const appDir = process.cwd();
  let cli: string;
  let flags: ReturnType<typeof parseServeFlags>;
  try {
    flags = parseServeFlags(own);
    if (flags.convexDir !== undefined)
      throw new UsageError("--convex-dir is for tessera serve; tessera dev pushes with the CLI");
    if (!existsSync(join(appDir, "package.json")))
      throw new UsageError(
        `no package.json in ${appDir}: run tessera dev in a Convex app's folder`,
      );
    cli = convexCli(appDir);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message !== "") process.stderr.write(`tessera dev: ${e.message}\n\n`);
    process.stderr.write(DEV_USAGE);
    return e.message === "" ? 0 : 2;
  }
  const dataDir = resolve(appDir, flags.dataDir);
  if (dataDir.startsWith(`${appDir}/`))
    ignoreInGit(appDir, `/${dataDir.slice(appDir.length + 1)}/`);
  const { deployment, server, site } = await startDeployment({ ...flags, dataDir });
  const envFile = join(appDir, ".env.local");
  writeFileSync(
    envFile,
    updateEnvLocal(
      existsSync(envFile) ? readFileSync(envFile, "utf8") : "",
      envLocalEntries(
        readFileSync(join(appDir, "package.json"), "utf8"),
        server.url,
        deployment.adminKey,
      ),
    ),
  );
  process.stdout.write(
    `Tessera dev deployment in ${dataDir}\n` +
      `  API URL:   ${server.url} (written to .env.local)\n` +
      `  admin key: ${deployment.adminKey}\n`,
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONVEX_SELF_HOSTED_URL: server.url,
    CONVEX_SELF_HOSTED_ADMIN_KEY: deployment.adminKey,
    // The CLI reports crashes to Sentry unless CI is set; nothing here goes to the internet.
    CI: process.env.CI ?? "1",
  };
  delete env.CONVEX_DEPLOYMENT;
  delete env.CONVEX_DEPLOY_KEY;
  const child = spawn(process.execPath, [cli, "dev", ...passThrough], {
    cwd: appDir,
    env,
    stdio: "inherit",
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (child.exitCode === null) child.kill("SIGINT");
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  const code = await new Promise<number>((resolveExit) => {
    child.on("error", (e) => {
      process.stderr.write(`tessera dev: could not start the Convex CLI: ${e.message}\n`);
      resolveExit(1);
    });
    child.on("exit", (c, signal) => resolveExit(c ?? (signal === "SIGINT" ? 0 : 1)));
  });
  await server.close();
  await site.close();
  await deployment.close();
  return code;
}
