/**
 * The WebSocket sync protocol's messages as the official client sends and
 * expects them (`convex/src/browser/sync/protocol.ts`): parsing and checking
 * client messages, and encoding server messages. Timestamps travel as
 * unsigned 64-bit little-endian integers in base64.
 */
import type { JsonValue } from "../values/index.js";

export class ProtocolError extends Error {
  override name = "ProtocolError";
}

export interface ConnectMessage {
  type: "Connect";
  sessionId: string;
  connectionCount: number;
  lastCloseReason: string | null;
  maxObservedTimestamp: bigint | null;
}

export type QuerySetChange =
  | { type: "Add"; queryId: number; udfPath: string; args: JsonValue[]; journal: string | null }
  | { type: "Remove"; queryId: number };

export interface ModifyQuerySetMessage {
  type: "ModifyQuerySet";
  baseVersion: number;
  newVersion: number;
  modifications: QuerySetChange[];
}

export interface RequestMessage {
  type: "Mutation" | "Action";
  requestId: number;
  udfPath: string;
  args: JsonValue[];
}

export type AuthenticateMessage =
  | { type: "Authenticate"; tokenType: "None"; baseVersion: number }
  | { type: "Authenticate"; tokenType: "User"; baseVersion: number; value: string }
  | {
      type: "Authenticate";
      tokenType: "Admin";
      baseVersion: number;
      value: string;
      impersonating: Record<string, JsonValue> | null;
    };

export interface EventMessage {
  type: "Event";
  eventType: string;
}

export type ClientMessage =
  | ConnectMessage
  | ModifyQuerySetMessage
  | RequestMessage
  | AuthenticateMessage
  | EventMessage;

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function field(o: Obj, name: string, type: string): unknown {
  const v = o[name];
  if (type === "u32") {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
      throw new ProtocolError(
        `${o.type} message: \`${name}\` must be a non-negative integer, got ${describe(v)}`,
      );
    return v;
  }
  if (typeof v !== type)
    throw new ProtocolError(`${o.type} message: \`${name}\` must be a ${type}, got ${describe(v)}`);
  return v;
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  // Not String(v): a JSON object may hold a `toString` that is not a function.
  if (typeof v === "object") return "an object";
  return typeof v === "string" ? "a string" : `${typeof v} ${String(v).slice(0, 40)}`;
}

function udfPath(o: Obj): string {
  const path = field(o, "udfPath", "string") as string;
  if (path.length === 0 || path.length > 1024)
    throw new ProtocolError(`${o.type} message: invalid \`udfPath\``);
  if (o.componentPath !== undefined && o.componentPath !== null && o.componentPath !== "")
    throw new ProtocolError(
      `not supported yet: components (componentPath ${describe(o.componentPath)})`,
    );
  return path;
}

function argsArray(o: Obj): JsonValue[] {
  const args = o.args;
  if (!Array.isArray(args))
    throw new ProtocolError(`${o.type} message: \`args\` must be an array, got ${describe(args)}`);
  return args as JsonValue[];
}

/** Decodes a base64 little-endian u64 timestamp. */
export function decodeTs(encoded: string): bigint {
  const bytes = Buffer.from(encoded, "base64");
  if (bytes.length !== 8 || bytes.toString("base64") !== encoded)
    throw new ProtocolError(`invalid timestamp ${JSON.stringify(encoded.slice(0, 40))}`);
  return bytes.readBigUInt64LE();
}

export function encodeTs(ts: bigint): string {
  // A fan-out encodes the same two timestamps (start and end) for every session.
  if (ts === recentTs[0]) return recentText[0]!;
  if (ts === recentTs[1]) return recentText[1]!;
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(ts);
  const text = bytes.toString("base64");
  recentTs[1] = recentTs[0]!;
  recentText[1] = recentText[0]!;
  recentTs[0] = ts;
  recentText[0] = text;
  return text;
}
const recentTs: bigint[] = [-1n, -1n];
const recentText: string[] = ["", ""];

/** Parses one client message (already JSON-decoded); throws `ProtocolError` for anything malformed. */
export function parseClientMessage(raw: unknown): ClientMessage {
  if (!isObject(raw)) throw new ProtocolError("message must be a JSON object");
  switch (raw.type) {
    case "Connect": {
      const sessionId = field(raw, "sessionId", "string") as string;
      if (sessionId.length === 0 || sessionId.length > 128)
        throw new ProtocolError("Connect message: invalid `sessionId`");
      const lastCloseReason = raw.lastCloseReason;
      if (
        lastCloseReason !== undefined &&
        lastCloseReason !== null &&
        typeof lastCloseReason !== "string"
      )
        throw new ProtocolError("Connect message: `lastCloseReason` must be a string or null");
      const ts = raw.maxObservedTimestamp;
      if (ts !== undefined && ts !== null && typeof ts !== "string")
        throw new ProtocolError("Connect message: `maxObservedTimestamp` must be a string");
      return {
        type: "Connect",
        sessionId,
        connectionCount: field(raw, "connectionCount", "u32") as number,
        lastCloseReason: (lastCloseReason as string | null | undefined) ?? null,
        maxObservedTimestamp: typeof ts === "string" ? decodeTs(ts) : null,
      };
    }
    case "ModifyQuerySet": {
      const baseVersion = field(raw, "baseVersion", "u32") as number;
      const newVersion = field(raw, "newVersion", "u32") as number;
      const mods = raw.modifications;
      if (!Array.isArray(mods))
        throw new ProtocolError("ModifyQuerySet message: `modifications` must be an array");
      const modifications = mods.map((m): QuerySetChange => {
        if (!isObject(m)) throw new ProtocolError("ModifyQuerySet message: invalid modification");
        if (m.type === "Add") {
          const journal = m.journal;
          if (journal !== undefined && journal !== null && typeof journal !== "string")
            throw new ProtocolError("Add: `journal` must be a string or null");
          return {
            type: "Add",
            queryId: field(m, "queryId", "u32") as number,
            udfPath: udfPath(m),
            args: argsArray(m),
            journal: (journal as string | null | undefined) ?? null,
          };
        }
        if (m.type === "Remove")
          return { type: "Remove", queryId: field(m, "queryId", "u32") as number };
        throw new ProtocolError(`ModifyQuerySet message: unknown modification ${describe(m.type)}`);
      });
      return { type: "ModifyQuerySet", baseVersion, newVersion, modifications };
    }
    case "Mutation":
    case "Action":
      return {
        type: raw.type,
        requestId: field(raw, "requestId", "u32") as number,
        udfPath: udfPath(raw),
        args: argsArray(raw),
      };
    case "Authenticate": {
      const baseVersion = field(raw, "baseVersion", "u32") as number;
      if (raw.tokenType === "None") return { type: "Authenticate", tokenType: "None", baseVersion };
      if (raw.tokenType === "User")
        return {
          type: "Authenticate",
          tokenType: "User",
          baseVersion,
          value: field(raw, "value", "string") as string,
        };
      if (raw.tokenType === "Admin") {
        const imp = raw.impersonating;
        if (imp !== undefined && imp !== null && !isObject(imp))
          throw new ProtocolError("Authenticate message: `impersonating` must be an object");
        return {
          type: "Authenticate",
          tokenType: "Admin",
          baseVersion,
          value: field(raw, "value", "string") as string,
          impersonating: (imp as Record<string, JsonValue> | null | undefined) ?? null,
        };
      }
      throw new ProtocolError(`Authenticate message: unknown tokenType ${describe(raw.tokenType)}`);
    }
    case "Event":
      return { type: "Event", eventType: field(raw, "eventType", "string") as string };
    default:
      throw new ProtocolError(`unknown message type ${describe(raw.type)}`);
  }
}

export interface StateVersion {
  querySet: number;
  ts: bigint;
  identity: number;
}

export function encodeVersion(v: StateVersion): string {
  return `{"querySet":${v.querySet},"ts":"${encodeTs(v.ts)}","identity":${v.identity}}`;
}

/** The client version a sync URL names (`/api/1.48.0/sync`), as [major, minor, patch], or null. */
export function parseClientVersion(version: string): [number, number, number] | null {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

export function versionAtLeast(v: [number, number, number], major: number, minor: number): boolean {
  return v[0] > major || (v[0] === major && v[1] >= minor);
}
