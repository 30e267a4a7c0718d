/**
 * Prebuilt text frames, read back by ws's own receiver (what the official
 * client's WebSocket parses): every length encoding, multi-byte text, and
 * one frame per message however many sockets send it.
 */
import type { Writable } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as wsModule from "ws";
import { textFrame } from "../../src/server/textFrames.js";

// ws exports its frame parser; its type declarations do not.
const { Receiver } = wsModule as unknown as {
  Receiver: new (options: { isServer: boolean; maxPayload: number }) => Writable;
};

/** What a client's WebSocket makes of `bytes`: each message's text, or an error. */
function receive(bytes: Buffer): string[] {
  const messages: string[] = [];
  const receiver = new Receiver({ isServer: false, maxPayload: 0 });
  receiver.on("message", (data: Buffer, isBinary: boolean) => {
    expect(isBinary).toBe(false);
    messages.push(data.toString("utf8"));
  });
  let failure: Error | null = null;
  receiver.on("error", (e: Error) => {
    failure = e;
  });
  receiver.write(bytes);
  if (failure !== null) throw failure;
  return messages;
}

describe("text frames", () => {
  it("hold messages of every length encoding", () => {
    // 7-bit, 16-bit and 64-bit lengths, at and around their bounds.
    for (const n of [0, 1, 125, 126, 127, 65535, 65536, 200_000]) {
      const text = "x".repeat(n);
      expect(receive(textFrame(Buffer.from(text)))).toEqual([text]);
    }
  });

  it("hold any text, back to back on one stream", () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: "grapheme", maxLength: 300 }), { maxLength: 5 }),
        (texts) => {
          const stream = Buffer.concat(texts.map((t) => textFrame(Buffer.from(t, "utf8"))));
          expect(receive(stream)).toEqual(texts);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("are built once per message", () => {
    const message = Buffer.from('{"type":"Transition"}');
    expect(textFrame(message)).toBe(textFrame(message));
    expect(textFrame(Buffer.from('{"type":"Transition"}'))).not.toBe(textFrame(message));
  });
});
