/**
 * One WebSocket connection of the sync protocol: the client's query set and
 * identity, and the transitions that keep the client's view of them current.
 *
 * Every transition shows all of the session's queries at one timestamp: an
 * update picks the latest published timestamp T, takes each query's result
 * valid at T from the shared query cache (running it at T when needed), and
 * sends the queries whose result changed. Updates run one at a time per
 * session and coalesce: whatever happens while one runs leads to one more.
 * The next update also waits until the socket has drained, so a slow client
 * receives fewer, larger steps instead of a growing queue.
 *
 * A mutation's response goes out as soon as it commits; the client holds it
 * until a transition reaches the commit's timestamp, so the session makes
 * sure one does (an empty transition if its queries did not change).
 */
import type { UserIdentity } from "../runtime/syscalls.js";
import { type JsonValue, MAX_JSON_DEPTH, nestedDeeperThan } from "../values/index.js";
import {
  type AuthenticateMessage,
  type ClientMessage,
  encodeVersion,
  type ModifyQuerySetMessage,
  ProtocolError,
  parseClientMessage,
  type RequestMessage,
  type StateVersion,
} from "./protocol.js";
import type { CachedQuery, QueryOutcome, QueryRequest } from "./queryCache.js";
import { QueryCache } from "./queryCache.js";
import {
  AuthenticationError,
  identityKeyOf,
  impersonatedIdentity,
  type SyncService,
} from "./service.js";

/** What a session needs from its socket. */
export interface SessionTransport {
  /** Sends one text message (a Buffer holds its UTF-8 bytes). */
  send(text: string | Buffer, done?: (err?: Error) => void): void;
  /** Bytes queued and not yet written. */
  readonly bufferedAmount: number;
  /**
   * Holds what is sent until the current turn's ticks have run, to write it
   * with one system call (a mutation's response and the transition that
   * follows it).
   */
  cork?(): void;
  close(code: number, reason: string): void;
}

interface SessionQuery {
  readonly queryId: number;
  readonly request: QueryRequest;
  readonly key: string;
  /** The result the client was last sent, and the watch on it. */
  shown: CachedQuery | null;
  unwatch: () => void;
  /** What the result it shows calls when a commit changes it (made once, not per watch). */
  readonly onChange: () => void;
}

export interface SessionOptions {
  /** Whether the client understands TransitionChunk messages (convex >= 1.28). */
  transitionChunks: boolean;
}

/** A socket with less than this queued counts as drained: the next update may go out. */
const DRAINED_BYTES = 64 * 1024;
/** What a client is told when making its update failed (schedule and updateLoop alike). */
const UPDATE_FAILED = "Internal server error while updating queries";

/** Close codes: the client reconnects after any of these. */
const CLOSE_TOO_SLOW = 4001;
const CLOSE_SHUTDOWN = 1001;
const CLOSE_FATAL = 1008;
/** After an AuthError: the client reconnects (with a fresh token) without logging an error. */
const CLOSE_NORMAL = 1000;
/** Longest `setTimeout` delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Session {
  private connected = false;
  private closed = false;
  private clientSessionId: string | null = null;
  /** The client said it had connected before (Connect's `connectionCount` > 0). */
  private reconnected = false;

  private readonly queries = new Map<number, SessionQuery>();
  private querySetVersion = 0;
  /** Queries removed since the last transition. */
  private removed = new Set<number>();

  /** The identity version the client is at: advanced by each Authenticate as it arrives. */
  private identityVersion = 0;
  /** The version whose identity is in effect (`identity`): what transitions report. */
  private appliedIdentityVersion = 0;
  private identity: UserIdentity | null = null;
  private identityKey = "";
  private isAdmin = false;
  /** Authenticate messages received and not yet applied; they are verified one at a time, in order. */
  private authPending = 0;
  /** Settles once every Authenticate received so far is applied (or refused). */
  private authChain: Promise<void> = Promise.resolve();
  /** When the user token in effect expires (ms since the epoch), or null. */
  private expiresAtMs: number | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;

  /** What the client was last sent. */
  private sent: StateVersion = { querySet: 0, ts: 0n, identity: 0 };
  /** The next transition must reach at least this timestamp (answered mutations). */
  private minTs = 0n;
  private dirty = false;
  private updating = false;
  private lastSendMs = Date.now();

  constructor(
    private readonly service: SyncService,
    private readonly transport: SessionTransport,
    private readonly options: SessionOptions,
  ) {
    service.sessions.add(this);
  }

  /** Handles one text frame from the client. */
  receive(text: string): void {
    if (this.closed) return;
    if (text.length > this.service.limits.maxMessageBytes) {
      this.fatal(
        `Message too large: ${text.length} bytes (the limit is ${this.service.limits.maxMessageBytes})`,
      );
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      this.fatal("Invalid message: not JSON");
      return;
    }
    if (nestedDeeperThan(json, MAX_JSON_DEPTH)) {
      this.fatal(
        `Invalid message: arrays and objects nested more than ${MAX_JSON_DEPTH} levels deep`,
      );
      return;
    }
    let message: ClientMessage;
    try {
      message = parseClientMessage(json);
    } catch (e) {
      this.fatal(
        e instanceof ProtocolError ? `Invalid message: ${e.message}` : "Internal server error",
      );
      return;
    }
    try {
      this.handle(message);
    } catch (e) {
      this.fatal(e instanceof ProtocolError ? e.message : "Internal server error");
    }
  }

  private handle(message: ClientMessage): void {
    if (message.type === "Connect") {
      if (this.connected) throw new ProtocolError("Connect sent twice on one connection");
      this.connected = true;
      this.clientSessionId = message.sessionId;
      this.reconnected = message.connectionCount > 0;
      return;
    }
    if (!this.connected) throw new ProtocolError(`${message.type} received before Connect`);
    switch (message.type) {
      case "ModifyQuerySet":
        this.modifyQuerySet(message);
        return;
      case "Authenticate":
        this.authenticate(message);
        return;
      case "Mutation":
        this.mutation(message).catch(() => this.fatal("Internal server error"));
        return;
      case "Action":
        this.action(message).catch(() => this.fatal("Internal server error"));
        return;
      case "Event":
        return;
    }
  }

  private modifyQuerySet(m: ModifyQuerySetMessage): void {
    if (m.baseVersion !== this.querySetVersion)
      throw new ProtocolError(
        `Base version ${m.baseVersion} of ModifyQuerySet does not match the current query set version ${this.querySetVersion}`,
      );
    if (m.newVersion <= m.baseVersion)
      throw new ProtocolError(
        `New version ${m.newVersion} of ModifyQuerySet is not after its base version ${m.baseVersion}`,
      );
    for (const change of m.modifications) {
      if (change.type === "Add") {
        if (this.queries.has(change.queryId))
          throw new ProtocolError(`Query ${change.queryId} was added twice`);
        if (this.queries.size >= this.service.limits.maxQueriesPerSession)
          throw new ProtocolError(
            `Too many queries: a session may subscribe to at most ${this.service.limits.maxQueriesPerSession} at once`,
          );
        const argsJson = change.args.length === 1 ? change.args[0]! : change.args;
        const request: QueryRequest = {
          udfPath: change.udfPath,
          argsJson: argsJson as JsonValue,
          identity: this.identity,
          identityKey: this.identityKey,
          allowInternal: this.isAdmin,
        };
        this.queries.set(change.queryId, {
          queryId: change.queryId,
          request,
          key: QueryCache.keyOf(request),
          shown: null,
          unwatch: noop,
          onChange: () => this.schedule(),
        });
        this.removed.delete(change.queryId);
      } else {
        const q = this.queries.get(change.queryId);
        if (q === undefined)
          throw new ProtocolError(`Query ${change.queryId} is not in the query set`);
        q.unwatch();
        this.queries.delete(change.queryId);
        this.removed.add(change.queryId);
      }
    }
    this.querySetVersion = m.newVersion;
    this.schedule();
  }

  private authenticate(m: AuthenticateMessage): void {
    if (m.baseVersion !== this.identityVersion)
      throw new ProtocolError(
        `Base version ${m.baseVersion} of Authenticate does not match the current identity version ${this.identityVersion}`,
      );
    // Later messages see the new identity version at once. Until it is
    // verified no transition goes out (it would show results of the previous
    // identity), and mutations sent after it wait for it.
    this.identityVersion = m.baseVersion + 1;
    const version = this.identityVersion;
    this.authPending++;
    this.authChain = this.authChain
      .then(() => this.verifyIdentity(m, version))
      .catch(() => this.fatal("Internal server error"))
      .finally(() => {
        this.authPending--;
        this.schedule();
      });
  }

  /**
   * Applies an Authenticate. A token that is refused gets an `AuthError`
   * (`authUpdateAttempted: true`) and the connection is closed: the official
   * client fetches a fresh token and reconnects with it (resending the
   * mutations it sent meanwhile, which are not run here), or, if it gives
   * up, reconnects without one.
   */
  private async verifyIdentity(m: AuthenticateMessage, version: number): Promise<void> {
    if (this.closed) return;
    let identity: UserIdentity | null = null;
    let admin = false;
    let expiresAtMs: number | null = null;
    try {
      if (m.tokenType === "Admin") {
        if (!this.service.auth.isAdminKey(m.value))
          throw new AuthenticationError("The admin key is not valid for this deployment");
        admin = true;
        identity = m.impersonating === null ? null : impersonatedIdentity(m.impersonating);
      } else if (m.tokenType === "User") {
        const verified = await this.service.auth.verifyUserToken(m.value);
        identity = verified.identity;
        expiresAtMs = verified.expiresAtMs;
      }
    } catch (e) {
      if (this.closed) return;
      const error = e instanceof AuthenticationError ? e.message : "Could not verify the token";
      this.send(
        JSON.stringify({
          type: "AuthError",
          error,
          baseVersion: m.baseVersion,
          authUpdateAttempted: true,
        }),
      );
      this.close(CLOSE_NORMAL, "Authentication failed");
      return;
    }
    if (this.closed) return;
    this.appliedIdentityVersion = version;
    this.identity = identity;
    this.isAdmin = admin;
    this.identityKey = identity === null ? "" : identityKeyOf(identity);
    this.watchExpiry(expiresAtMs);
    // Every query now runs as the new identity (a query whose key stays the same keeps its result).
    for (const [id, q] of this.queries) {
      const request: QueryRequest = {
        ...q.request,
        identity,
        identityKey: this.identityKey,
        allowInternal: admin,
      };
      const key = QueryCache.keyOf(request);
      if (key === q.key) {
        this.queries.set(id, { ...q, request });
        continue;
      }
      q.unwatch();
      this.queries.set(id, { ...q, request, key, unwatch: noop });
    }
  }

  /** Reports the user token's expiry when it comes (unless the client sent a new one by then). */
  private watchExpiry(expiresAtMs: number | null): void {
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    this.expiresAtMs = expiresAtMs;
    if (expiresAtMs === null || !Number.isFinite(expiresAtMs)) return;
    const delay = expiresAtMs - Date.now();
    // Timers hold 32 bits of ms; a token valid longer than that is checked at each mutation only.
    if (delay > MAX_TIMER_MS) return;
    this.expiryTimer = setTimeout(
      () => {
        this.expiryTimer = null;
        // Timers run on the monotonic clock and the expiry is on the wall
        // clock: the timer can fire before Date.now() reaches it (by a
        // millisecond, or more when the wall clock is slewed). Wait again for the rest.
        if (this.tokenExpired()) this.expired();
        else this.watchExpiry(this.expiresAtMs);
      },
      Math.max(0, delay),
    );
    this.expiryTimer.unref();
  }

  private tokenExpired(): boolean {
    return this.expiresAtMs !== null && Date.now() >= this.expiresAtMs;
  }

  /**
   * The user token in effect expired: an `AuthError` with
   * `authUpdateAttempted: false`, on which the official client fetches a new
   * token and reconnects with it, and the connection is closed (so nothing
   * more runs as the expired identity). Nothing happens while a newer
   * Authenticate is being verified: it replaces the identity.
   */
  private expired(): void {
    if (this.closed || this.authPending > 0 || !this.tokenExpired()) return;
    this.send(
      JSON.stringify({
        type: "AuthError",
        error: "Token expired",
        baseVersion: this.appliedIdentityVersion - 1,
        authUpdateAttempted: false,
      }),
    );
    this.close(CLOSE_NORMAL, "Token expired");
  }

  /**
   * Waits until a request may run: as the identity of the Authenticate
   * messages sent before it, with a token that has not expired (if it has,
   * the session reports it and closes; the client resends after reconnecting).
   */
  private async readyToRun(): Promise<boolean> {
    if (this.authPending > 0) await this.authChain;
    if (this.closed) return false;
    if (this.tokenExpired()) {
      this.expired();
      return false;
    }
    return true;
  }

  private async mutation(m: RequestMessage): Promise<void> {
    if (!(await this.readyToRun())) return;
    const args = m.args.length === 1 ? m.args[0]! : m.args;
    const outcome = await this.service.mutation(
      this.clientSessionId === null
        ? null
        : { client: this.clientSessionId, requestId: m.requestId, reconnected: this.reconnected },
      m.udfPath,
      args,
      this.identity,
      this.isAdmin,
    );
    if (this.closed) return;
    // The transition that releases the response usually follows at once.
    if (outcome.ts !== null) this.transport.cork?.();
    this.send(`{"type":"MutationResponse","requestId":${m.requestId},${outcome.bodyJson}}`);
    if (outcome.ts === null) return;
    if (outcome.ts <= this.sent.ts) {
      // The client already has a transition past the commit but holds the
      // response until the next one: an empty transition releases it.
      this.sendTransition(this.sent, []);
      return;
    }
    if (outcome.ts > this.minTs) this.minTs = outcome.ts;
    this.schedule();
  }

  private async action(m: RequestMessage): Promise<void> {
    if (!(await this.readyToRun())) return;
    const args = m.args.length === 1 ? m.args[0]! : m.args;
    const bodyJson = await this.service.action(m.udfPath, args, this.identity, this.isAdmin);
    if (this.closed) return;
    this.send(`{"type":"ActionResponse","requestId":${m.requestId},${bodyJson}}`);
  }

  /** Asks for an update; runs it unless one is running (which then runs once more). */
  private schedule(): void {
    this.dirty = true;
    if (this.updating) return;
    // A commit's fan-out calls this for every watching session in one pass, and
    // their results are usually cached by then: such an update is made here,
    // without the promise an updateLoop costs each session.
    if (this.authPending === 0 && !this.closed && this.transport.bufferedAmount < DRAINED_BYTES) {
      this.updating = true;
      this.dirty = false;
      let done: boolean;
      try {
        done = this.updateFromCache();
      } catch {
        this.fatal(UPDATE_FAILED);
        return;
      } finally {
        this.updating = false;
      }
      if (done && !this.dirty) return;
      this.dirty = true;
    }
    void this.updateLoop();
  }

  private async updateLoop(): Promise<void> {
    this.updating = true;
    try {
      while (this.dirty && !this.closed) {
        // Results wait for the identity being verified (which schedules again).
        if (this.authPending > 0) return;
        this.dirty = false;
        if (this.transport.bufferedAmount >= DRAINED_BYTES) {
          await this.drained();
          if (this.closed) return;
        }
        if (!this.updateFromCache()) await this.update();
      }
    } catch {
      this.fatal(UPDATE_FAILED);
    } finally {
      this.updating = false;
    }
  }

  /**
   * Updates at once if every query's result at the latest timestamp is
   * already cached (the usual case when a commit fans out); false if some
   * must run first.
   */
  private updateFromCache(): boolean {
    const ts = this.service.db.latestTs();
    const queries = [...this.queries.values()];
    const entries: CachedQuery[] = [];
    for (const q of queries) {
      const entry = this.service.cache.peek(q.key, ts);
      if (entry === undefined) return false;
      entries.push(entry);
    }
    this.apply(ts, queries, entries);
    return true;
  }

  private async update(): Promise<void> {
    const ts = this.service.db.latestTs();
    const querySet = this.querySetVersion;
    const identity = this.appliedIdentityVersion;
    const queries = [...this.queries.values()];
    const cache = this.service.cache;
    const entries = await Promise.all(queries.map((q) => cache.get(q.request, ts, q.key)));
    if (this.closed) return;
    if (
      querySet !== this.querySetVersion ||
      identity !== this.appliedIdentityVersion ||
      this.authPending > 0
    ) {
      // Changed meanwhile: what was computed no longer matches; the loop runs again.
      this.dirty = true;
      return;
    }
    this.apply(ts, queries, entries);
  }

  /** Shows `entries` (the results of `queries` at `ts`): one transition with what changed. */
  private apply(ts: bigint, queries: SessionQuery[], entries: CachedQuery[]): void {
    const querySet = this.querySetVersion;
    const identity = this.appliedIdentityVersion;
    const updated: Array<{ queryId: number; entry: CachedQuery }> = [];
    for (let i = 0; i < queries.length; i++) {
      const q = queries[i]!;
      const entry = entries[i]!;
      if (q.shown === entry) continue;
      if (q.shown === null || !sameOutcome(q.shown, entry))
        updated.push({ queryId: q.queryId, entry });
      q.unwatch();
      q.shown = entry;
      q.unwatch = this.service.cache.watch(entry, q.onChange);
    }
    const end: StateVersion = { querySet, ts, identity };
    if (this.removed.size === 0 && updated.length === 1) {
      // The usual fan-out: every session of a query sends the same message.
      const { queryId, entry } = updated[0]!;
      const shared = sharedTransition(this.sent, end, queryId, entry);
      if (this.fitsUnchunked(shared.length)) {
        this.sent = end;
        this.send(shared.bytes);
        return;
      }
    }
    const mods = updated.map((u) => modification(u.queryId, u.entry));
    for (const id of this.removed) mods.push(`{"type":"QueryRemoved","queryId":${id}}`);
    this.removed.clear();
    const versionsChanged = querySet !== this.sent.querySet || identity !== this.sent.identity;
    const tsNeeded = this.minTs > this.sent.ts;
    if (mods.length === 0 && !versionsChanged && !tsNeeded) return;
    this.sendTransition(end, mods);
  }

  private fitsUnchunked(length: number): boolean {
    return !this.options.transitionChunks || length <= this.service.limits.transitionChunkBytes;
  }

  private sendTransition(end: StateVersion, mods: string[]): void {
    const text = transitionText(this.sent, end, mods);
    this.sent = end;
    if (this.fitsUnchunked(text.length)) {
      this.send(text);
      return;
    }
    const chunk = this.service.limits.transitionChunkBytes;
    const totalParts = Math.ceil(text.length / chunk);
    const transitionId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    for (let part = 0; part < totalParts; part++) {
      this.send(
        JSON.stringify({
          type: "TransitionChunk",
          chunk: text.slice(part * chunk, (part + 1) * chunk),
          partNumber: part,
          totalParts,
          transitionId,
        }),
      );
    }
  }

  private send(text: string | Buffer): void {
    if (this.closed) return;
    if (this.tooSlow()) return;
    this.lastSendMs = Date.now();
    this.transport.send(text);
  }

  /** Closes the socket (4001) if more than the limit is queued on it. */
  private tooSlow(): boolean {
    if (this.transport.bufferedAmount <= this.service.limits.maxBufferedBytes) return false;
    this.close(CLOSE_TOO_SLOW, "Client too slow: it did not keep up with its query updates");
    return true;
  }

  /**
   * Resolves once the socket's queue is (nearly) empty. Checks the limit
   * while waiting: a client that stopped reading gets nothing more sent, so
   * the check in `send` alone would never close it.
   */
  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (!this.closed) this.tooSlow();
        if (this.closed || this.transport.bufferedAmount < DRAINED_BYTES) resolve();
        else setTimeout(check, 5);
      };
      setTimeout(check, 5);
    });
  }

  /** Sends a keep-alive if nothing was sent for a while (the client reconnects after 30–60 s of silence). */
  heartbeat(nowMs: number): void {
    if (this.closed || !this.connected || this.updating) return;
    if (nowMs - this.lastSendMs < this.service.limits.heartbeatMs) return;
    if (
      this.authPending > 0 ||
      this.sent.querySet !== this.querySetVersion ||
      this.sent.identity !== this.appliedIdentityVersion
    )
      return;
    // An empty transition from the current version to itself: every client version accepts it.
    this.sendTransition(this.sent, []);
  }

  private fatal(error: string): void {
    if (this.closed) return;
    this.transport.send(JSON.stringify({ type: "FatalError", error }));
    this.close(CLOSE_FATAL, error.slice(0, 120));
  }

  shutdown(reason: string): void {
    this.close(CLOSE_SHUTDOWN, reason);
  }

  private close(code: number, reason: string): void {
    if (this.closed) return;
    this.transport.close(code, reason);
    this.disconnected();
  }

  /** The socket is gone: stop watching results. */
  disconnected(): void {
    this.closed = true;
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    for (const q of this.queries.values()) q.unwatch();
    this.queries.clear();
    this.service.sessions.delete(this);
  }
}

function noop(): void {}

/** Whether the client would see no difference (a re-run that returned the same). */
function sameOutcome(a: CachedQuery, b: CachedQuery): boolean {
  const x = a.outcome;
  const y = b.outcome;
  if (x === y) return true;
  if (x.logLines.length !== 0 || y.logLines.length !== 0) return false;
  if (x.ok && y.ok) return x.valueJson === y.valueJson;
  if (!x.ok && !y.ok)
    return x.errorMessage === y.errorMessage && x.errorDataJson === y.errorDataJson;
  return false;
}

function transitionText(start: StateVersion, end: StateVersion, mods: string[]): string {
  return `{"type":"Transition","startVersion":${encodeVersion(start)},"endVersion":${encodeVersion(end)},"modifications":[${mods.join(",")}]}`;
}

/**
 * The last transition built for one updated query, kept as bytes: when a
 * commit fans out, the sessions of a query are at the same versions and
 * send the very same message, encoded once instead of once per socket.
 */
let lastShared: {
  start: StateVersion;
  end: StateVersion;
  queryId: number;
  entry: CachedQuery;
  bytes: Buffer;
  /** The text's length (what TransitionChunk limits count). */
  length: number;
} | null = null;

function sameVersion(a: StateVersion, b: StateVersion): boolean {
  return a.querySet === b.querySet && a.ts === b.ts && a.identity === b.identity;
}

function sharedTransition(
  start: StateVersion,
  end: StateVersion,
  queryId: number,
  entry: CachedQuery,
): { bytes: Buffer; length: number } {
  const m = lastShared;
  if (
    m !== null &&
    m.entry === entry &&
    m.queryId === queryId &&
    sameVersion(m.start, start) &&
    sameVersion(m.end, end)
  )
    return m;
  const text = transitionText(start, end, [modification(queryId, entry)]);
  lastShared = {
    start: { ...start },
    end: { ...end },
    queryId,
    entry,
    bytes: Buffer.from(text, "utf8"),
    length: text.length,
  };
  return lastShared;
}

function modification(queryId: number, entry: CachedQuery): string {
  const o = entry.outcome;
  let tail = tails.get(o);
  if (tail === undefined) {
    tail = modificationTail(o);
    tails.set(o, tail);
  }
  return `{"type":"${o.ok ? "QueryUpdated" : "QueryFailed"}","queryId":${queryId}${tail}`;
}

/** What follows the query id in a modification, the same for every session showing the outcome. */
const tails = new WeakMap<QueryOutcome, string>();

function modificationTail(o: QueryOutcome): string {
  if (o.ok)
    return `,"value":${o.valueJson},"logLines":${JSON.stringify(o.logLines)},"journal":null}`;
  // No `errorData` unless the function threw a ConvexError: the client turns
  // any errorData it finds (even null) into a ConvexError.
  const errorData = o.errorDataJson === null ? "" : `,"errorData":${o.errorDataJson}`;
  return `,"errorMessage":${JSON.stringify(o.errorMessage)},"logLines":${JSON.stringify(o.logLines)}${errorData},"journal":null}`;
}
