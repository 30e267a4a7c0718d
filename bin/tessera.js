#!/usr/bin/env node
// Tessera's command-line entry point. isolated-vm needs Node's startup
// snapshot off (--no-node-snapshot), which only a new process can have: this
// script starts one running src/cli/main.ts with the TypeScript hooks of
// ts-register.mjs, passes signals on and exits with its code.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const entry = new URL("../src/cli/main.ts", import.meta.url);
const register = new URL("./ts-register.mjs", import.meta.url).href;
const child = spawn(
  process.execPath,
  ["--no-node-snapshot", "--import", register, fileURLToPath(entry), ...process.argv.slice(2)],
  { stdio: "inherit" },
);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => child.kill(signal));
}
child.on("exit", (code, signal) => {
  process.exitCode = code ?? (signal ? 128 : 1);
});
