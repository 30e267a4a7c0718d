/**
 * The HTTP function API the official `ConvexHttpClient` calls
 * (`convex/src/browser/http_client.ts`): `/api/query`, `/api/query_ts`,
 * `/api/query_at_ts`, `/api/mutation`, `/api/action`, `/api/function`.
 * Success is 200 `{status: "success", value, logLines}`; a function that
 * failed is 560 `{status: "error", errorMessage, errorData?, logLines}`; a
 * malformed request is 400 and bad credentials 401, with a text body the
 * client shows as the error.
 */
import type { IncomingMessage } from "node:http";
import type { UserIdentity } from "../runtime/syscalls.js";
import { decodeTs, encodeTs, ProtocolError } from "../sync/protocol.js";
import type { QueryOutcome } from "../sync/queryCache.js";
import {
  AuthenticationError,
  identityKeyOf,
  impersonatedIdentity,
  type SyncService,
} from "../sync/service.js";
import {
  isPlainObject,
  type JsonValue,
  MAX_JSON_DEPTH,
  nestedDeeperThan,
} from "../values/index.js";

/** The status the official client treats as "the function failed" (not a transport error). */
export const STATUS_UDF_FAILED = 560;

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code = "BadRequest",
  ) {
    super(message);
  }
}

interface Caller {
  identity: UserIdentity | null;
  identityKey: string;
  admin: boolean;
}

interface FunctionBody {
  path: string;
  args: JsonValue;
  ts?: string;
}

/** Reads the caller's credentials from `Authorization`. */
async function callerOf(req: IncomingMessage, sync: SyncService): Promise<Caller> {
  const header = req.headers.authorization;
  if (header === undefined || header === "")
    return { identity: null, identityKey: "", admin: false };
  const space = header.indexOf(" ");
  const scheme = space < 0 ? header : header.slice(0, space);
  const value = space < 0 ? "" : header.slice(space + 1).trim();
  if (scheme === "Convex") {
    const colon = value.indexOf(":");
    const key = colon < 0 ? value : value.slice(0, colon);
    if (!sync.auth.isAdminKey(key))
      throw new HttpError(401, "The admin key is not valid for this deployment", "BadAdminKey");
    if (colon < 0) return { identity: null, identityKey: "", admin: true };
    let attrs: unknown;
    try {
      attrs = JSON.parse(Buffer.from(value.slice(colon + 1), "base64").toString("utf8"));
    } catch {
      throw new HttpError(400, "Invalid acting-as identity in the admin authorization");
    }
    if (!isPlainObject(attrs)) throw new HttpError(400, "Invalid acting-as identity");
    // Hashed (identityKeyOf) by code that recurses: a deeper one would be a 500.
    if (nestedDeeperThan(attrs, MAX_JSON_DEPTH))
      throw new HttpError(
        400,
        `Invalid acting-as identity: it nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`,
      );
    const identity = impersonatedIdentity(attrs);
    return { identity, identityKey: identityKeyOf(identity), admin: true };
  }
  if (scheme === "Bearer") {
    try {
      const { identity } = await sync.auth.verifyUserToken(value);
      return { identity, identityKey: identityKeyOf(identity), admin: false };
    } catch (e) {
      throw new HttpError(
        401,
        e instanceof AuthenticationError ? e.message : "Could not verify the token",
        "Unauthenticated",
      );
    }
  }
  throw new HttpError(
    401,
    `Unsupported authorization scheme ${JSON.stringify(scheme.slice(0, 20))}`,
  );
}

/**
 * A request body's JSON, refused with a 400 when it is not JSON or nests
 * arrays and objects deeper than the code that handles it can take
 * (`MAX_JSON_DEPTH`). The function API's and the admin routes' bodies.
 */
export function parseJsonBody(text: string): unknown {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, "The request body is not valid JSON");
  }
  if (nestedDeeperThan(body, MAX_JSON_DEPTH))
    throw new HttpError(
      400,
      `The request body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`,
    );
  return body;
}

function parseBody(text: string, argsForm: "array" | "object"): FunctionBody {
  const body = parseJsonBody(text);
  if (!isPlainObject(body)) throw new HttpError(400, "The request body must be a JSON object");
  const b = body as Record<string, unknown>;
  if (typeof b.path !== "string" || b.path === "")
    throw new HttpError(400, "The request body must name the function in `path`");
  if (b.format !== undefined && b.format !== "convex_encoded_json" && b.format !== "json")
    throw new HttpError(400, `Unsupported format ${JSON.stringify(b.format)}`);
  if (b.componentPath !== undefined && b.componentPath !== null && b.componentPath !== "")
    throw new HttpError(400, "not supported yet: components (componentPath)");
  let args: JsonValue = (b.args ?? {}) as JsonValue;
  if (argsForm === "array" && Array.isArray(args)) {
    if (args.length > 1) throw new HttpError(400, "`args` must hold one arguments object");
    args = (args[0] ?? {}) as JsonValue;
  }
  const out: FunctionBody = { path: b.path, args };
  if (typeof b.ts === "string") out.ts = b.ts;
  return out;
}

function success(value: string, logLines: string[]): { status: number; body: string } {
  return {
    status: 200,
    body: `{"status":"success","value":${value},"logLines":${JSON.stringify(logLines)}}`,
  };
}

function failure(f: { errorMessage: string; errorDataJson: string | null; logLines: string[] }) {
  return {
    status: STATUS_UDF_FAILED,
    body: `{"status":"error","errorMessage":${JSON.stringify(f.errorMessage)}${f.errorDataJson === null ? "" : `,"errorData":${f.errorDataJson}`},"logLines":${JSON.stringify(f.logLines)}}`,
  };
}

function outcomeResponse(o: QueryOutcome) {
  return o.ok ? success(o.valueJson, o.logLines) : failure(o);
}

async function runQuery(sync: SyncService, caller: Caller, body: FunctionBody, ts: bigint) {
  const entry = await sync.cache.get(
    {
      udfPath: body.path,
      argsJson: body.args,
      identity: caller.identity,
      identityKey: caller.identityKey,
      // Admins may call internal functions; their results are cached apart.
      allowInternal: caller.admin,
    },
    ts,
  );
  return outcomeResponse(entry.outcome);
}

async function runMutation(sync: SyncService, caller: Caller, body: FunctionBody) {
  const outcome = await sync.mutation(null, body.path, body.args, caller.identity, caller.admin);
  return fromResponseBody(outcome.bodyJson);
}

async function runAction(sync: SyncService, caller: Caller, body: FunctionBody) {
  return fromResponseBody(await sync.action(body.path, body.args, caller.identity, caller.admin));
}

/** An HTTP answer from the body of a WebSocket Mutation/ActionResponse (the same outcome, told twice). */
function fromResponseBody(bodyJson: string) {
  const parsed = JSON.parse(`{${bodyJson}}`) as {
    success: boolean;
    result: JsonValue;
    logLines: string[];
    errorData?: JsonValue;
  };
  if (parsed.success) return success(JSON.stringify(parsed.result), parsed.logLines);
  return failure({
    errorMessage: parsed.result as string,
    errorDataJson: parsed.errorData === undefined ? null : JSON.stringify(parsed.errorData),
    logLines: parsed.logLines,
  });
}

/** Handles one `/api/*` function call; returns the status and JSON body. */
export async function handleFunctionCall(
  route: string,
  req: IncomingMessage,
  bodyText: string,
  sync: SyncService,
): Promise<{ status: number; body: string }> {
  if (route === "/api/query_ts") {
    return { status: 200, body: JSON.stringify({ ts: encodeTs(sync.db.latestTs()) }) };
  }
  const caller = await callerOf(req, sync);
  switch (route) {
    case "/api/query":
      return runQuery(sync, caller, parseBody(bodyText, "array"), sync.db.latestTs());
    case "/api/query_at_ts": {
      const body = parseBody(bodyText, "array");
      if (body.ts === undefined) throw new HttpError(400, "`ts` is required");
      let ts: bigint;
      try {
        ts = decodeTs(body.ts);
      } catch (e) {
        throw new HttpError(400, e instanceof ProtocolError ? e.message : "invalid `ts`");
      }
      if (ts > sync.db.latestTs()) throw new HttpError(400, "`ts` is in the future");
      if (ts < sync.db.retainedFromTs)
        throw new HttpError(400, "`ts` is older than the data this deployment still keeps");
      return runQuery(sync, caller, body, ts);
    }
    case "/api/mutation":
      return runMutation(sync, caller, parseBody(bodyText, "array"));
    case "/api/action":
      return runAction(sync, caller, parseBody(bodyText, "array"));
    case "/api/function": {
      const body = parseBody(bodyText, "object");
      const kind = sync.runner.kindOf(body.path);
      if (kind === "mutation") return runMutation(sync, caller, body);
      if (kind === "action") return runAction(sync, caller, body);
      // Queries, and unknown functions (reported like the query path reports them).
      return runQuery(sync, caller, body, sync.db.latestTs());
    }
    default:
      throw new HttpError(404, `No such endpoint: ${route}`, "NotFound");
  }
}
