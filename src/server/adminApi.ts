/**
 * The admin endpoints the official CLI calls in self-hosted mode
 * (`CONVEX_SELF_HOSTED_URL` + `CONVEX_SELF_HOSTED_ADMIN_KEY`): canonical
 * URLs, config hashes, the `deploy2/*` push and environment variables. Every one requires the admin
 * key (`Authorization: Convex <key>`); errors are `{code, message}` JSON,
 * which the CLI prints.
 */
import type { IncomingMessage } from "node:http";
import {
  applyEnvironmentChanges,
  type EnvironmentChange,
  EnvironmentVariableError,
} from "../functions/environment.js";
import { isPlainObject } from "../values/index.js";
import type { Deployment } from "./deployment.js";
import { HttpError, parseJsonBody } from "./httpApi.js";
import type { PushManager } from "./push.js";
import { requestUrl } from "./requestUrl.js";

/** Admin routes: method and path → handler of the parsed JSON body. */
type Handler = (body: unknown, request: { url: URL; signal: AbortSignal }) => unknown;

export class AdminApi {
  private readonly routes: Map<string, Handler>;

  constructor(
    private readonly deployment: Deployment,
    pushes: PushManager,
  ) {
    this.routes = new Map<string, Handler>([
      [
        "GET /api/v1/get_canonical_urls",
        () => ({ convexCloudUrl: deployment.urls.cloud, convexSiteUrl: deployment.urls.site }),
      ],
      ["POST /api/get_config_hashes", () => pushes.configHashes()],
      ["POST /api/update_environment_variables", (b) => this.updateEnvironment(b)],
      ["GET /api/stream_function_logs", (_b, r) => this.streamLogs(r.url, r.signal)],
      ["POST /api/deploy2/evaluate_schema", (b) => pushes.evaluateSchema(b)],
      ["POST /api/deploy2/evaluate_push", (b) => pushes.evaluatePush(b)],
      ["POST /api/deploy2/start_push", (b) => pushes.startPush(b)],
      ["POST /api/deploy2/wait_for_schema", (b) => pushes.waitForSchema(b)],
      ["POST /api/deploy2/finish_push", (b) => pushes.finishPush(b)],
      // Tessera's own: counts an operator (or the benchmark) reads.
      [
        "GET /api/tessera/metrics",
        () => ({
          mutations: { ...deployment.mutationCounters },
          // How often executions found a context to reuse (runtime/README.md, "Context reuse").
          contexts: deployment.app ? { ...deployment.app.runtime.reuse } : null,
          // Async syscalls answered without leaving the isolate (runtime/README.md, "Syscalls").
          asyncSyscalls: deployment.app ? { ...deployment.app.runtime.asyncSyscalls } : null,
          // Isolates the query and mutation pool holds (runtime/README.md, "Isolate pool").
          isolates: deployment.app ? deployment.app.runtime.isolateCount : null,
          // Queries and mutations moved off the server's thread (runtime/README.md, "Limits and determinism").
          background: deployment.app ? deployment.app.runtime.background.counts : null,
        }),
      ],
      // The CLI reports its push timings; nothing to keep.
      ["POST /api/deploy2/report_push_completed", () => ({})],
    ]);
  }

  /** Whether `method path` is an admin route. */
  handles(method: string, path: string): boolean {
    return this.routes.has(`${method} ${path}`);
  }

  /** Runs an admin route; `body` is the request body (already decompressed). */
  async handle(req: IncomingMessage, path: string, body: Buffer): Promise<string> {
    this.checkAdmin(req);
    const handler = this.routes.get(`${req.method} ${path}`)!;
    const parsed = body.length > 0 ? parseJsonBody(body.toString("utf8")) : null;
    // handles() was given this request's path: it has one.
    const url = requestUrl(req)!;
    // Aborted when the client goes away (long polls stop waiting).
    const abort = new AbortController();
    const onClose = () => abort.abort();
    req.socket.once("close", onClose);
    try {
      return JSON.stringify(await handler(parsed, { url, signal: abort.signal }));
    } finally {
      // Keep-alive connections carry many requests: no listener may pile up.
      req.socket.off("close", onClose);
    }
  }

  private streamLogs(url: URL, signal: AbortSignal): Promise<unknown> {
    const text = url.searchParams.get("cursor") ?? "0";
    const cursor = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(cursor))
      throw new HttpError(400, `Invalid cursor ${JSON.stringify(text)}`);
    return this.deployment.logs.since(cursor, signal);
  }

  /** `npx convex env set/remove`: `{changes: [{name, value | null}]}`, applied in one transaction. */
  private async updateEnvironment(body: unknown): Promise<unknown> {
    const changes = isPlainObject(body) ? (body as { changes?: unknown }).changes : undefined;
    try {
      await applyEnvironmentChanges(this.deployment.db, changes as EnvironmentChange[]);
    } catch (e) {
      if (e instanceof EnvironmentVariableError) throw new HttpError(400, e.message, e.code);
      throw e;
    }
    return {};
  }

  private checkAdmin(req: IncomingMessage): void {
    const header = req.headers.authorization ?? "";
    const m = /^Convex (\S+)$/.exec(header);
    if (m === null)
      throw new HttpError(
        401,
        "This endpoint needs the deployment's admin key (Authorization: Convex <admin key>)",
        "MissingAdminKey",
      );
    if (!this.deployment.auth.isAdminKey(m[1]!))
      throw new HttpError(401, "The admin key is not valid for this deployment", "BadAdminKey");
  }
}
