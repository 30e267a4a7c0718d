/** Tessera's command line (run by bin/tessera.js with the flags isolated-vm needs). */
import { readFileSync } from "node:fs";
import { dev } from "./dev.js";
import { serve } from "./serve.js";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
  version: string;
};

const usage = `tessera ${pkg.version}: a backend that runs Convex apps

Usage:
  tessera serve   serve a deployment (tessera serve --help for its flags)
  tessera dev     develop a Convex app against a local deployment (run in the app's folder)
  tessera --version
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(usage);
      return 0;
    case "--version":
    case "-v":
      process.stdout.write(`${pkg.version}\n`);
      return 0;
    case "serve":
      return serve(rest);
    case "dev":
      return dev(rest);
    default:
      process.stderr.write(`tessera: unknown command ${JSON.stringify(command)}\n\n${usage}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`tessera: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
