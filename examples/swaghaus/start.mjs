// The README's main job (`npm run swaghaus` at the repository root): a local
// Tessera deployment on SQLite for this app (`tessera dev`, data in
// examples/swaghaus/.tessera), the functions pushed by the official Convex
// CLI, the store stocked (`--run items:seed`), and the web app served by
// Vite. Ctrl-C stops everything.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createServer } from "vite";

const appDir = fileURLToPath(new URL(".", import.meta.url));
const tessera = fileURLToPath(new URL("../../bin/tessera.js", import.meta.url));
const port = process.env.PORT ?? "3210";
const webPort = Number(process.env.WEB_PORT ?? 5173);

const backend = spawn(
  process.execPath,
  [
    tessera,
    "dev",
    "--port",
    port,
    ...(process.env.DATA_DIR ? ["--data-dir", process.env.DATA_DIR] : []),
    "--",
    "--run",
    "items:seed",
  ],
  { cwd: appDir, stdio: ["inherit", "pipe", "pipe"] },
);

let web = null;
let webStarting = false;
let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  await web?.close();
  if (backend.exitCode === null) backend.kill("SIGINT");
  process.exitCode = code;
}
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));
backend.on("exit", (code) => {
  if (!stopping) {
    process.stderr.write(`swaghaus: the backend stopped (exit code ${code})\n`);
    void stop(code ?? 1);
  }
});

// The web app starts once the functions are live (the CLI says so), reading
// the backend URL that `tessera dev` wrote to .env.local.
// (The CLI reports on stderr.)
let out = "";
backend.stdout.on("data", (chunk) => {
  process.stdout.write(chunk);
  watch(chunk);
});
backend.stderr.on("data", (chunk) => {
  process.stderr.write(chunk);
  watch(chunk);
});
function watch(chunk) {
  if (webStarting || stopping) return;
  out += chunk.toString();
  if (!/Convex functions ready/.test(out)) return;
  webStarting = true;
  createServer({
    configFile: fileURLToPath(new URL("./vite.config.ts", import.meta.url)),
    server: { port: webPort, strictPort: true, host: "127.0.0.1" },
  })
    .then(async (server) => {
      web = server;
      await server.listen();
      process.stdout.write(
        `\nSwaghaus is ready: open http://127.0.0.1:${webPort}/?user=alice (and ?user=bob in another window)\n`,
      );
    })
    .catch((e) => {
      process.stderr.write(`swaghaus: could not start the web app: ${e.message}\n`);
      void stop(1);
    });
}
