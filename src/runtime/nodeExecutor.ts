/**
 * "use node" actions: the app's Node modules, written to a folder of their
 * own, run in a Node.js child process (`node/child.mjs`), never in the
 * server's process. The child asks for every syscall over IPC; the host
 * answers with the same `SyscallHandler` isolate actions use. A child that
 * crashes fails the actions it was running and is started again for the
 * next one.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ModuleSpec } from "./appRuntime.js";
import type { ExecutionError, ExecutionOutcome, LogLine, SyscallHandler } from "./execution.js";
import { parseSyscallArgs, SyscallError } from "./execution.js";
import type { ModuleSource } from "./modules.js";

const CHILD = fileURLToPath(new URL("./node/child.mjs", import.meta.url));
/** How long importing the "use node" modules may take (the isolate runtime gives imports as long). */
const ANALYZE_TIMEOUT_MS = 10_000;

interface Run {
  handler: SyscallHandler;
  resolve: (o: ExecutionOutcome) => void;
  timer: NodeJS.Timeout;
  started: number;
}

type ChildMessage =
  | { type: "ready" }
  | { type: "analyzed"; id: number; ok: boolean; modules?: ModuleSpec[]; error?: ExecutionError }
  | { type: "syscall"; runId: number; callId: number; op: string; args: string }
  | {
      type: "done";
      id: number;
      ok: boolean;
      value?: string;
      error?: ExecutionError;
      logs: LogLine[];
    };

/**
 * Writes an app's Node modules into `root/<content hash>/` (once) and returns
 * that folder; `packagesDir` (installed external packages) becomes its `node_modules`.
 */
export function writeNodeModules(
  root: string,
  modules: readonly ModuleSource[],
  packagesDir: string | null = null,
): string {
  const hash = createHash("sha256");
  for (const m of modules) hash.update(m.path).update("\0").update(m.source).update("\0");
  hash.update(packagesDir ?? "");
  const dir = join(root, hash.digest("hex").slice(0, 32));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), '{"type":"module","private":true}\n');
  for (const m of modules) {
    const file = join(dir, m.path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, m.source);
  }
  const link = join(dir, "node_modules");
  if (packagesDir !== null && !existsSync(link))
    symlinkSync(join(packagesDir, "node_modules"), link, "dir");
  return dir;
}

export class NodeExecutor {
  private child: ChildProcess | null = null;
  private ready: Promise<void> | null = null;
  private nextId = 1;
  private readonly runs = new Map<number, Run>();
  private readonly analyses = new Map<number, (m: ChildMessage & { type: "analyzed" }) => void>();
  private disposed = false;
  /** The Node modules' functions (set by `start`). */
  modules: ModuleSpec[] = [];

  private constructor(
    private readonly dir: string,
    private readonly paths: string[],
  ) {}

  /**
   * Starts the runtime for the modules in `dir` (entry modules `paths`) and
   * analyses them. Importing them runs pushed code: an import that has not
   * finished after `analyzeTimeoutMs` fails the start and ends the child.
   */
  static async start(
    dir: string,
    paths: string[],
    analyzeTimeoutMs = ANALYZE_TIMEOUT_MS,
  ): Promise<NodeExecutor> {
    const executor = new NodeExecutor(dir, paths);
    try {
      executor.modules = await executor.analyze(analyzeTimeoutMs);
    } catch (e) {
      executor.dispose();
      throw e;
    }
    return executor;
  }

  private ensureChild(): Promise<void> {
    if (this.ready !== null && this.child !== null) return this.ready;
    const child = spawn(process.execPath, [CHILD], {
      cwd: this.dir,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.child = child;
    this.ready = new Promise<void>((resolve, reject) => {
      child.once("error", reject);
      child.on("message", (m: ChildMessage) => {
        if (m.type === "ready") resolve();
        else this.receive(m);
      });
      child.once("exit", (code, signal) => {
        reject(new Error(`the Node.js action runtime exited (${code ?? signal})`));
        this.crashed(child, `the Node.js action runtime stopped (${code ?? signal})`);
      });
    });
    this.ready.catch(() => {});
    return this.ready;
  }

  private crashed(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    this.child = null;
    this.ready = null;
    for (const [id, run] of this.runs) {
      clearTimeout(run.timer);
      this.runs.delete(id);
      run.resolve(failure(`Uncaught Error: ${why} while this action ran`, [], run.started));
    }
    for (const [id, done] of this.analyses) {
      this.analyses.delete(id);
      done({ type: "analyzed", id, ok: false, error: { message: why, name: "Error", stack: "" } });
    }
  }

  private async analyze(timeoutMs: number): Promise<ModuleSpec[]> {
    await this.ensureChild();
    const id = this.nextId++;
    const child = this.child!;
    let timer: NodeJS.Timeout | undefined;
    const answer = await new Promise<ChildMessage & { type: "analyzed" }>((resolve) => {
      this.analyses.set(id, resolve);
      timer = setTimeout(() => {
        this.analyses.delete(id);
        const message = `importing them did not finish within ${timeoutMs / 1000} s`;
        resolve({ type: "analyzed", id, ok: false, error: { message, name: "Error", stack: "" } });
        // The import runs on the child's thread (a loop, or a wait that never ends): only
        // ending the child stops it.
        child.kill("SIGKILL");
      }, timeoutMs);
      child.send({ type: "analyze", id, dir: this.dir, paths: this.paths });
    });
    clearTimeout(timer);
    if (!answer.ok)
      throw new Error(`Failed to import the "use node" modules: ${answer.error?.message}`);
    return answer.modules!;
  }

  private receive(m: ChildMessage): void {
    if (m.type === "analyzed") {
      const done = this.analyses.get(m.id);
      this.analyses.delete(m.id);
      done?.(m);
    } else if (m.type === "syscall") {
      const run = this.runs.get(m.runId);
      if (run === undefined) return;
      void this.answer(run, m);
    } else if (m.type === "done") {
      const run = this.runs.get(m.id);
      if (run === undefined) return;
      this.runs.delete(m.id);
      clearTimeout(run.timer);
      const userTimeMs = Date.now() - run.started;
      run.resolve(
        m.ok
          ? { ok: true, value: JSON.parse(m.value!), logs: m.logs, userTimeMs }
          : { ok: false, error: m.error!, logs: m.logs, userTimeMs },
      );
    }
  }

  private async answer(run: Run, m: { callId: number; op: string; args: string }): Promise<void> {
    let reply: Record<string, unknown>;
    try {
      const result = await run.handler.async(m.op, parseSyscallArgs(m.op, m.args));
      reply = {
        type: "answer",
        callId: m.callId,
        ok: true,
        result: JSON.stringify(result ?? null),
      };
    } catch (e) {
      reply =
        e instanceof SyscallError
          ? {
              type: "answer",
              callId: m.callId,
              ok: false,
              message: e.message,
              ...(e.convexErrorData !== undefined ? { data: e.convexErrorData } : {}),
            }
          : {
              type: "answer",
              callId: m.callId,
              ok: false,
              message: "Internal error while running a syscall",
            };
    }
    this.child?.send(reply);
  }

  /** Runs an action of a Node module; resolves with its outcome (never rejects). */
  async run(
    request: { module: string; exportName: string; argsJson: string; requestId: string },
    handler: SyscallHandler,
    timeLimitMs: number,
  ): Promise<ExecutionOutcome> {
    const started = Date.now();
    if (this.disposed) return failure("The Node.js action runtime is shut down", [], started);
    try {
      await this.ensureChild();
    } catch (e) {
      return failure(
        `Could not start the Node.js action runtime: ${(e as Error).message}`,
        [],
        started,
      );
    }
    const id = this.nextId++;
    return new Promise<ExecutionOutcome>((resolve) => {
      const timer = setTimeout(() => {
        this.runs.delete(id);
        resolve({
          ok: false,
          error: {
            message: `Function execution timed out: your action ran for more than ${timeLimitMs / 1000} s (the limit for actions)`,
            name: "Error",
            stack: "",
            kind: "timeout",
          },
          logs: [],
          userTimeMs: Date.now() - started,
        });
      }, timeLimitMs);
      this.runs.set(id, { handler, resolve, timer, started });
      this.child!.send({
        type: "run",
        id,
        dir: this.dir,
        module: request.module,
        exportName: request.exportName,
        requestId: request.requestId,
        args: `[${request.argsJson}]`,
      });
    });
  }

  dispose(): void {
    this.disposed = true;
    const child = this.child;
    this.child = null;
    this.ready = null;
    if (child !== null && child.exitCode === null) child.kill("SIGKILL");
  }
}

function failure(message: string, logs: LogLine[], started: number): ExecutionOutcome {
  return {
    ok: false,
    error: { message, name: "Error", stack: "", kind: "internal" },
    logs,
    userTimeMs: Date.now() - started,
  };
}
