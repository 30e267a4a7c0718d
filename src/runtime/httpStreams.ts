/**
 * The syscalls that stream an HTTP action's request and response bodies
 * between the isolate and whoever serves the request (the site server),
 * added to an action's own syscalls. The isolate side is the prelude's
 * fetch.ts (httpBridge): a streamed request's `body` pulls
 * `tessera/httpRequestRead` once per chunk it needs; a Response whose body
 * is a stream is sent with `tessera/httpResponseStart` (status, headers and
 * the first chunk) and `tessera/httpResponseWrite` per further chunk, each
 * answered when the client can take more; `tessera/httpResponseAborted`
 * settles when the client goes away, and the prelude then cancels the
 * stream. Chunks cross base64-encoded, in the JSON of the string bridge.
 */
import type { SyscallHandler } from "./execution.js";
import { SyscallError } from "./execution.js";

/** Status line and headers of a streamed response. */
export interface HttpResponseHead {
  status: number;
  statusText: string;
  headers: [string, string][];
}

/** One HTTP exchange's bodies, as the server provides them to its HTTP action. */
export interface HttpExchange {
  /**
   * The next chunk of the request body, null at its end. Reads only when
   * called (backpressure by pull); rejects with a SyscallError when the body
   * is over the limit or the client went away.
   */
  readRequest(): Promise<Uint8Array | null>;
  /** The action wants no more of the request body. */
  cancelRequest(): void;
  /** Sends the status and headers of a streamed response, with its first chunk. */
  startResponse(head: HttpResponseHead, first: Uint8Array): Promise<void>;
  /** Sends a chunk; resolves when the client can take more; rejects when it cannot (gone, limit). */
  writeResponse(chunk: Uint8Array): Promise<void>;
  /** Settles when the client went away before the response ended. */
  readonly clientGone: Promise<void>;
}

const PASSIVE = "tessera/httpResponseAborted";

/** `base` (an action's syscalls) plus the body syscalls of `exchange`. */
export function httpActionSyscalls(base: SyscallHandler, exchange: HttpExchange): SyscallHandler {
  let started = false;
  return {
    sync: (op, args) => base.sync(op, args),
    passive: (op) => op === PASSIVE || base.passive?.(op) === true,
    async async(op, args) {
      const a = (typeof args === "object" && args !== null ? args : {}) as Record<string, unknown>;
      switch (op) {
        case "tessera/httpRequestRead": {
          const chunk = await exchange.readRequest();
          return chunk === null ? null : Buffer.from(chunk).toString("base64");
        }
        case "tessera/httpRequestCancel":
          exchange.cancelRequest();
          return null;
        case "tessera/httpResponseStart": {
          if (started) throw new SyscallError("The HTTP action's response was already started");
          if (
            typeof a.status !== "number" ||
            typeof a.statusText !== "string" ||
            !Array.isArray(a.headers) ||
            typeof a.chunk !== "string"
          )
            throw new SyscallError("Invalid arguments for tessera/httpResponseStart");
          started = true;
          const head = {
            status: a.status,
            statusText: a.statusText,
            headers: a.headers as [string, string][],
          };
          await exchange.startResponse(head, Buffer.from(a.chunk, "base64"));
          return null;
        }
        case "tessera/httpResponseWrite":
          if (!started) throw new SyscallError("The HTTP action's response was not started");
          if (typeof a.chunk !== "string")
            throw new SyscallError("Invalid arguments for tessera/httpResponseWrite");
          await exchange.writeResponse(Buffer.from(a.chunk, "base64"));
          return null;
        case PASSIVE:
          await exchange.clientGone;
          return null;
      }
      return base.async(op, args);
    },
  };
}
