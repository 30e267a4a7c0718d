import { describe, expect, it } from "vitest";
import { BackgroundPolicy, SYNC_SLICE_MS } from "../../src/runtime/backgroundPolicy.js";

describe("BackgroundPolicy", () => {
  it("starts a function in the background once it outgrew the slice, until a run there used under half a slice", () => {
    const policy = new BackgroundPolicy();
    expect(policy.startsThere("a:f")).toBe(false);
    policy.noteMoved("a:f");
    expect(policy.startsThere("a:f")).toBe(true);
    expect(policy.startsThere("a:g")).toBe(false);
    policy.noteRan("a:f", SYNC_SLICE_MS);
    expect(policy.startsThere("a:f")).toBe(true);
    policy.noteRan("a:f", SYNC_SLICE_MS / 2);
    expect(policy.startsThere("a:f")).toBe(true);
    policy.noteRan("a:f", SYNC_SLICE_MS / 2 - 1);
    expect(policy.startsThere("a:f")).toBe(false);
    expect(policy.counts).toEqual({ moved: 1, ran: 3 });
    expect(policy.countsOf("a:f")).toEqual({ moved: 1, ran: 3 });
    expect(policy.countsOf("a:g")).toEqual({ moved: 0, ran: 0 });
  });

  it("tries a function that stays long on the server's thread again after 16 runs in the background", () => {
    const policy = new BackgroundPolicy();
    policy.noteMoved("a:f");
    for (let i = 0; i < 15; i++) {
      policy.noteRan("a:f", 1000);
      expect(policy.startsThere("a:f")).toBe(true);
    }
    policy.noteRan("a:f", 1000);
    expect(policy.startsThere("a:f")).toBe(false);
    // Moved again: the count of runs there starts over.
    policy.noteMoved("a:f");
    policy.noteRan("a:f", 1000);
    expect(policy.startsThere("a:f")).toBe(true);
  });
});
