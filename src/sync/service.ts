/**
 * What every sync session shares: the database, the function runner, the
 * query cache, identity checks, and the record of mutations already answered
 * per client session (so that a mutation the client resends after a
 * reconnect is answered again, never committed twice).
 */
import { createHash } from "node:crypto";
import type { Database } from "../database/index.js";
import type { FunctionRunner } from "../functions/runner.js";
import type { UserIdentity } from "../runtime/syscalls.js";
import { fromJson, isPlainObject, type JsonValue, toJson, type Value } from "../values/index.js";
import { encodeTs } from "./protocol.js";
import { failureOf, logLine, QueryCache } from "./queryCache.js";
import { inSlices } from "./slices.js";

/** Verifies credentials; throws an `AuthenticationError` with the message for the client. */
export interface Authenticator {
  /** Whether `key` is this deployment's admin key (compared in constant time). */
  isAdminKey(key: string): boolean;
  /** The identity a user token carries, and until when the token is valid. */
  verifyUserToken(token: string): Promise<VerifiedUser>;
}

export interface VerifiedUser {
  identity: UserIdentity;
  /** When the token stops being valid (ms since the epoch), or null if never. */
  expiresAtMs: number | null;
}

export class AuthenticationError extends Error {
  override name = "AuthenticationError";
}

/** The identity an admin acts as (WebSocket `impersonating`, HTTP `Convex <key>:<identity>`). */
export function impersonatedIdentity(attrs: unknown): UserIdentity {
  if (!isPlainObject(attrs)) throw new AuthenticationError("Invalid impersonated identity");
  const a = attrs as Record<string, unknown>;
  const subject = typeof a.subject === "string" ? a.subject : "";
  const issuer = typeof a.issuer === "string" ? a.issuer : "";
  return {
    ...a,
    subject,
    issuer,
    tokenIdentifier:
      typeof a.tokenIdentifier === "string" ? a.tokenIdentifier : `${issuer}|${subject}`,
  } as unknown as UserIdentity;
}

/**
 * What query results are cached under for an identity: a hash of all of it
 * (a stable JSON with sorted keys), so that two tokens of one user with
 * different claims never share results.
 */
export function identityKeyOf(identity: UserIdentity): string {
  return createHash("sha256").update(stableJson(identity)).digest("base64");
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (typeof v === "object" && v !== null) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`).join(",")}}`;
  }
  if (typeof v === "bigint") return `"${v}n"`;
  return JSON.stringify(v) ?? "null";
}

export interface SyncLimits {
  /** Queries one session may subscribe to at once (default 4,096). */
  maxQueriesPerSession: number;
  /** Largest client message, in bytes (default 16 MiB). */
  maxMessageBytes: number;
  /** Bytes queued on a socket before its client counts as too slow and is disconnected (default 32 MiB). */
  maxBufferedBytes: number;
  /** Transitions longer than this are sent as TransitionChunks to clients that support them (default 1 MiB). */
  transitionChunkBytes: number;
  /** A session that has sent nothing for this long gets a keep-alive (default 15 s). */
  heartbeatMs: number;
}

/** Sessions given their keep-alive per turn of the event loop. */
export const HEARTBEAT_SLICE = 256;

export const DEFAULT_SYNC_LIMITS: SyncLimits = {
  maxQueriesPerSession: 4096,
  maxMessageBytes: 16 * 1024 * 1024,
  maxBufferedBytes: 32 * 1024 * 1024,
  transitionChunkBytes: 1024 * 1024,
  heartbeatMs: 15_000,
};

/** A finished mutation, as the session sends it (the request id is filled in per message). */
export interface MutationOutcome {
  ok: boolean;
  /** The rest of the MutationResponse after `requestId`, as JSON text. */
  bodyJson: string;
  /** Commit timestamp of a successful mutation. */
  ts: bigint | null;
}

interface ClientRequests {
  /** By request id: the call's print (`callPrint`) and its outcome. */
  outcomes: Map<number, { print: string; outcome: Promise<MutationOutcome> }>;
  /** The request ids in `outcomes` whose outcome is settled. */
  settled: Set<number>;
  lastUsedMs: number;
  /**
   * First seen here on the client's first connection (`connectionCount` 0):
   * then no earlier process can have answered any of its requests.
   */
  fresh: boolean;
  /** The largest request id seen here (the client numbers its requests upwards). */
  maxRequestId: number;
}

/** A client's mutation request, as the session knows it. */
export interface ClientRequest {
  /** The client's session id (Connect). */
  client: string;
  requestId: number;
  /** Whether the client said it connected before (`connectionCount` > 0). */
  reconnected: boolean;
}

/** Answers to mutations kept per client session this long after its last use. */
const REQUEST_MEMORY_MS = 10 * 60_000;
/** …and at most this many per client session (oldest forgotten first). */
const REQUESTS_PER_CLIENT = 1024;

export interface SyncServiceOptions {
  db: Database;
  runner: FunctionRunner;
  auth: Authenticator;
  limits?: Partial<SyncLimits>;
}

export class SyncService {
  readonly db: Database;
  readonly cache: QueryCache;
  readonly auth: Authenticator;
  readonly limits: SyncLimits;
  private runnerRef: FunctionRunner;
  private readonly clients = new Map<string, ClientRequests>();
  private readonly sweeper: NodeJS.Timeout;
  /** Open sessions (for heartbeats and shutdown). */
  readonly sessions = new Set<{ heartbeat(nowMs: number): void; shutdown(reason: string): void }>();
  private readonly heartbeats: NodeJS.Timeout;
  /** A pass of `heartbeat` is under way (in slices). */
  private heartbeating = false;

  constructor(options: SyncServiceOptions) {
    this.db = options.db;
    this.runnerRef = options.runner;
    this.auth = options.auth;
    this.limits = { ...DEFAULT_SYNC_LIMITS, ...options.limits };
    this.cache = new QueryCache(options.db, options.runner);
    this.sweeper = setInterval(() => this.sweep(Date.now()), 60_000);
    this.sweeper.unref();
    this.heartbeats = setInterval(
      () => this.heartbeat(),
      Math.max(10, this.limits.heartbeatMs / 3),
    );
    this.heartbeats.unref();
  }

  /**
   * Gives every idle session its keep-alive, `HEARTBEAT_SLICE` sessions per
   * turn of the event loop. Sessions that connected together fall idle
   * together: 10,000 of them in one pass held the loop 280 ms every 15 s
   * (a GET /version polled meanwhile waited that long; 45–80 ms in slices,
   * with the 10,000 clients' process busy on the same two cores).
   */
  private heartbeat(): void {
    if (this.heartbeating) return;
    this.heartbeating = true;
    inSlices(
      [...this.sessions],
      (calls) => calls === HEARTBEAT_SLICE,
      (s) => s.heartbeat(Date.now()),
      () => {
        this.heartbeating = false;
      },
    );
  }

  get runner(): FunctionRunner {
    return this.runnerRef;
  }

  /** Switches to new code: later executions use `runner`, every cached result is re-run. */
  setRunner(runner: FunctionRunner): void {
    this.runnerRef = runner;
    this.cache.reset(runner);
  }

  /**
   * Runs a mutation once per (client session, request id): a resend of a
   * request already answered (or still running) gets the same outcome, also
   * from a server restarted in between (the answer is stored with the
   * commit and looked up when this process cannot rule it out). A request id
   * answers only a resend of the same function with the same arguments.
   */
  mutation(
    request: ClientRequest | null,
    udfPath: string,
    args: JsonValue,
    identity: UserIdentity | null,
    allowInternal: boolean,
  ): Promise<MutationOutcome> {
    if (request === null) return this.runMutation(udfPath, args, identity, allowInternal, null);
    const { requestId } = request;
    let client = this.clients.get(request.client);
    if (client === undefined) {
      client = {
        outcomes: new Map(),
        settled: new Set(),
        lastUsedMs: Date.now(),
        fresh: !request.reconnected,
        maxRequestId: -1,
      };
      this.clients.set(request.client, client);
    }
    client.lastUsedMs = Date.now();
    const print = callPrint(udfPath, args);
    const known = client.outcomes.get(requestId);
    // Another call under a request id already used (the official client never
    // does this) is not answered with the earlier call's outcome: it runs.
    if (known !== undefined && known.print === print) return known.outcome;
    // Answered by an earlier process, or here but forgotten (REQUESTS_PER_CLIENT).
    const mayBeStored = !client.fresh || requestId <= client.maxRequestId;
    if (requestId > client.maxRequestId) client.maxRequestId = requestId;
    const call = { ...request, print };
    const outcome = mayBeStored
      ? this.storedOrRun(call, udfPath, args, identity, allowInternal)
      : this.runMutation(udfPath, args, identity, allowInternal, call);
    const entry = { print, outcome };
    if (known !== undefined) client.settled.delete(requestId);
    client.outcomes.set(requestId, entry);
    void outcome.then(() => {
      if (client.outcomes.get(requestId) === entry) client.settled.add(requestId);
    });
    // Only answers already given are forgotten: one still running may be
    // resent, and until its commit is written no stored answer exists.
    while (client.outcomes.size > REQUESTS_PER_CLIENT) {
      const oldest = client.outcomes.keys().next().value as number;
      if (!client.settled.delete(oldest)) break;
      client.outcomes.delete(oldest);
    }
    return outcome;
  }

  private async storedOrRun(
    /** With the call's `callPrint`, which a stored answer must match. */
    request: ClientRequest & { print: string },
    udfPath: string,
    args: JsonValue,
    identity: UserIdentity | null,
    allowInternal: boolean,
  ): Promise<MutationOutcome> {
    let stored: { ts: bigint; text: string } | null;
    try {
      stored = await this.db.mutationAnswer(request.client, request.requestId);
    } catch (e) {
      return { ok: false, ts: null, bodyJson: failureBody(e) };
    }
    // An answer to another call under the same ids (a client that reused its
    // session id, say) is not this one's: the call runs.
    const newline = stored?.text.indexOf("\n") ?? -1;
    if (stored === null || stored.text.slice(0, newline) !== request.print)
      return this.runMutation(udfPath, args, identity, allowInternal, request);
    return committedOutcome(stored.text.slice(newline + 1), stored.ts);
  }

  private async runMutation(
    udfPath: string,
    args: JsonValue,
    identity: UserIdentity | null,
    allowInternal: boolean,
    /** With the call's `callPrint`, stored before its answer. */
    request: (ClientRequest & { print: string }) | null,
  ): Promise<MutationOutcome> {
    // The answer as stored with the commit, encoded once for the store and the response.
    let body: string | null = null;
    try {
      const r = await this.runnerRef.mutation(udfPath, fromJson(args) as Value, {
        identity,
        allowInternal,
        ...(request === null
          ? {}
          : {
              request: {
                client: request.client,
                requestId: request.requestId,
                // What it answered, after what it was (the body's JSON has no raw newline).
                encode: (result) => {
                  body = successBody(result);
                  return `${request.print}\n${body}`;
                },
              },
            }),
      });
      return committedOutcome(body ?? successBody(r), r.ts);
    } catch (e) {
      return { ok: false, ts: null, bodyJson: failureBody(e) };
    }
  }

  /**
   * Runs an action; resolves with the rest of its ActionResponse after
   * `requestId`, as JSON text (success with the result, or the error).
   */
  async action(
    udfPath: string,
    args: JsonValue,
    identity: UserIdentity | null,
    allowInternal: boolean,
  ): Promise<string> {
    try {
      const r = await this.runnerRef.action(udfPath, fromJson(args) as Value, {
        identity,
        allowInternal,
      });
      return successBody(r);
    } catch (e) {
      return failureBody(e);
    }
  }

  private sweep(nowMs: number): void {
    for (const [id, client] of this.clients) {
      if (nowMs - client.lastUsedMs > REQUEST_MEMORY_MS) this.clients.delete(id);
    }
    // A failure here is the database's (it reports it on its own path).
    this.db.forgetMutationAnswers(REQUEST_MEMORY_MS).catch(() => {});
  }

  /** Closes every session (with `reason`) and stops the timers. */
  close(reason = "Server shutting down"): void {
    clearInterval(this.sweeper);
    clearInterval(this.heartbeats);
    for (const s of [...this.sessions]) s.shutdown(reason);
    this.cache.close();
  }
}

/** What identifies a call's function and arguments in a stored answer (a resend repeats both). */
function callPrint(udfPath: string, args: JsonValue): string {
  return createHash("sha256")
    .update(udfPath)
    .update("\0")
    .update(stableJson(args))
    .digest("base64");
}

/** A call's answer after `requestId` in a Mutation/ActionResponse. */
function successBody(r: { value: Value; logs: { level: string; message: string }[] }): string {
  return `"success":true,"result":${JSON.stringify(toJson(r.value))},"logLines":${JSON.stringify(r.logs.map(logLine))}`;
}

/** A successful mutation's outcome: its answer and its commit timestamp. */
function committedOutcome(body: string, ts: bigint): MutationOutcome {
  return { ok: true, ts, bodyJson: `${body},"ts":"${encodeTs(ts)}"` };
}

/** A failed call's answer after `requestId` in a Mutation/ActionResponse. */
function failureBody(e: unknown): string {
  const f = failureOf(e);
  const data = f.errorDataJson === null ? "" : `,"errorData":${f.errorDataJson}`;
  return `"success":false,"result":${JSON.stringify(f.errorMessage)},"logLines":${JSON.stringify(f.logLines)}${data}`;
}
