// The README's main job (`npm run swaghaus` at the repository root): a local
// Tessera deployment on SQLite for this app (`tessera dev`, data in
// examples/swaghaus/.tessera or $DATA_DIR), the functions pushed by the
// official Convex CLI, the store stocked (`--run items:seed`), and the web app
// served by Vite on $WEB_PORT. Ctrl-C (or SIGTERM) stops everything, and this
// script exits once the backend has; if the backend stops by itself, so does
// the web app.
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
    "--site-port",
    process.env.SITE_PORT ?? "3211",
    ...(process.env.DATA_DIR ? ["--data-dir", process.env.DATA_DIR] : []),
    "--",
    "--run",
    "items:seed",
  ],
  { cwd: appDir, stdio: ["inherit", "pipe", "pipe"] },
);
const backendExited = new Promise((resolve) => backend.on("exit", resolve));

/** The Vite dev server once created; `webStarted` settles when it is listening (or failed). */
let web = null;
let webStarted = null;
let stopping = false;

/** Stops the web app and the backend (`tessera dev` stops the Convex CLI), then exits. */
async function stop(code) {
  if (stopping) return;
  stopping = true;
  if (backend.exitCode === null && backend.signalCode === null) backend.kill("SIGINT");
  await webStarted;
  try {
    await web?.close();
  } catch (e) {
    process.stderr.write(`swaghaus: closing the web app: ${e.message}\n`);
  }
  await backendExited;
  process.exit(code);
}
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));
backend.on("exit", (code, signal) => {
  if (!stopping) {
    process.stderr.write(`swaghaus: the backend stopped (${signal ?? `exit code ${code}`})\n`);
    void stop(code ?? 1);
  }
});

// The web app starts once the functions are live (the CLI says so, on
// stderr), reading the backend URL that `tessera dev` wrote to .env.local.
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
  if (webStarted || stopping) return;
  out += chunk.toString();
  if (/Convex functions ready/.test(out)) webStarted = startWeb();
}

async function startWeb() {
  try {
    // Vite's dev server exits the process on SIGTERM (and on stdin's end) as
    // soon as it has closed itself, which would leave the backend running:
    // stop() handles those instead, so drop the listeners it adds.
    const sigterm = process.listeners("SIGTERM");
    const stdinEnd = process.stdin.listeners("end");
    web = await createServer({
      configFile: fileURLToPath(new URL("./vite.config.ts", import.meta.url)),
      server: { port: webPort, strictPort: true, host: "127.0.0.1" },
    });
    for (const l of process.listeners("SIGTERM")) {
      if (!sigterm.includes(l)) process.off("SIGTERM", l);
    }
    for (const l of process.stdin.listeners("end")) {
      if (!stdinEnd.includes(l)) process.stdin.off("end", l);
    }
    if (stopping) return;
    await web.listen();
    if (stopping) return;
    process.stdout.write(
      `\nSwaghaus is ready: open http://127.0.0.1:${webPort}/?user=alice (and ?user=bob in another window)\n`,
    );
  } catch (e) {
    if (stopping) return;
    process.stderr.write(`swaghaus: could not start the web app: ${e.message}\n`);
    void stop(1);
  }
}
