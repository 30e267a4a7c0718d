#!/usr/bin/env node
// Tessera's command-line entry point. Subcommands land with the issues that
// build them; until then they say so and exit with an error.
import { readFileSync } from "node:fs";

const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const [command] = process.argv.slice(2);

const usage = `tessera ${pkg.version}: a backend that runs Convex apps

Usage:
  tessera serve   serve a Convex app (not available yet)
  tessera dev     develop a Convex app against a local server (not available yet)
  tessera --version
`;

switch (command) {
  case undefined:
  case "help":
  case "--help":
  case "-h":
    process.stdout.write(usage);
    break;
  case "--version":
  case "-v":
    process.stdout.write(`${pkg.version}\n`);
    break;
  case "serve":
  case "dev":
    process.stderr.write(
      `tessera ${command}: not supported yet: this version contains the storage engine only; ` +
        "serving Convex apps arrives with the function runtime, sync protocol and deploy work.\n",
    );
    process.exitCode = 2;
    break;
  default:
    process.stderr.write(`tessera: unknown command ${JSON.stringify(command)}\n\n${usage}`);
    process.exitCode = 2;
}
