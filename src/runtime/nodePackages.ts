/**
 * External packages of "use node" actions (`node.externalPackages` in
 * convex.json: the CLI leaves them out of the bundles and lists them with
 * their versions in the push). They are installed from the npm registry into
 * `root/<hash of the list>/` once and shared by every app version that needs
 * the same list; an install that fails fails the push with npm's message.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface NodePackage {
  name: string;
  version: string;
}

/** npm package names (scoped or not) and exact versions or tags: nothing that npm could read as a flag, path or URL. */
const NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]*$/;

export class NodePackageError extends Error {
  override name = "NodePackageError";
}

/** How long one install may take. */
const INSTALL_TIMEOUT_MS = 5 * 60_000;

/** Installs `packages` (once) and returns the folder whose `node_modules` holds them. */
export async function installNodePackages(
  root: string,
  packages: readonly NodePackage[],
): Promise<string> {
  for (const p of packages) {
    if (!NAME.test(p.name) || !VERSION.test(p.version))
      throw new NodePackageError(
        `Invalid external package ${JSON.stringify(`${p.name}@${p.version}`)}`,
      );
  }
  const specs = packages.map((p) => `${p.name}@${p.version}`).sort();
  const dir = join(root, createHash("sha256").update(specs.join("\n")).digest("hex").slice(0, 32));
  if (existsSync(join(dir, ".installed"))) return dir;
  const staging = `${dir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(staging, { recursive: true });
  writeFileSync(join(staging, "package.json"), '{"private":true}\n');
  try {
    await runNpm(staging, specs);
    writeFileSync(join(staging, ".installed"), `${specs.join("\n")}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }
  return dir;
}

function runNpm(cwd: string, specs: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "npm",
      [
        "install",
        "--no-audit",
        "--no-fund",
        "--no-package-lock",
        "--ignore-scripts",
        "--omit=dev",
        "--loglevel=error",
        ...specs,
      ],
      { cwd, stdio: ["ignore", "ignore", "pipe"] },
    );
    let err = "";
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), INSTALL_TIMEOUT_MS);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(
        new NodePackageError(`Could not run npm to install ${specs.join(", ")}: ${e.message}`),
      );
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve();
      const tail = err
        .split("\n")
        .filter((l) => l.trim() !== "" && !l.includes('Unknown user config "nodedir"'))
        .slice(-8)
        .join("\n");
      reject(
        new NodePackageError(
          `npm could not install ${specs.join(", ")} (${signal ?? `exit ${code}`}):\n${tail}`,
        ),
      );
    });
  });
}
