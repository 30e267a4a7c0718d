/**
 * The official Convex CLI (the repository's `convex` 1.48, by path) run in
 * self-hosted mode against a test server, and app folders for it to push.
 */
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dirname, "../..");
const cliEntry = join(root, "node_modules/convex/bin/main.js");

export interface CliResult {
  code: number;
  /** stdout and stderr together. */
  out: string;
}

/** A temporary app folder holding a copy of `convexDir`, depending on the repository's `convex`. */
export function makeApp(convexDir: string, name: string): string {
  const app = mkdtempSync(join(tmpdir(), `tessera-${name}-`));
  cpSync(convexDir, join(app, "convex"), { recursive: true });
  writeFileSync(
    join(app, "package.json"),
    JSON.stringify({ name, private: true, dependencies: { convex: "*" } }),
  );
  // The app's `convex` dependency (the CLI bundles against it) is the repository's.
  symlinkSync(join(root, "node_modules"), join(app, "node_modules"), "dir");
  return app;
}

/** Runs `convex <args>` in `app` against the deployment at `url` with `adminKey`. */
export function runCli(
  app: string,
  target: { url: string; adminKey: string },
  args: string[],
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CONVEX_SELF_HOSTED_URL: target.url,
      CONVEX_SELF_HOSTED_ADMIN_KEY: target.adminKey,
      CI: "1",
    };
    delete env.CONVEX_DEPLOYMENT;
    delete env.CONVEX_DEPLOY_KEY;
    const child = spawn(process.execPath, [cliEntry, ...args], { cwd: app, env });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`convex ${args.join(" ")} did not finish:\n${out}`));
    }, 60_000);
    // "close", not "exit": the pipes may still hold output when the process has exited.
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, out });
    });
  });
}
