import { describe, expect, it } from "vitest";
import { BackgroundPolicy, SYNC_SLICE_MS } from "../../src/runtime/backgroundPolicy.js";

describe("BackgroundPolicy", () => {
  it("starts a function in the background once it outgrew the slice, until a run there took under half a slice", () => {
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
  });
});
