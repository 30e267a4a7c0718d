import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppRuntime } from "../../src/runtime/appRuntime.js";
import { linkModules } from "../../src/runtime/loader.js";

// Pushed code evaluated once at push time (schema, crons, auth config) is the
// sender's: an export that never returns must not hold the push forever.
describe("AppRuntime.evaluateOnce", () => {
  let runtime: AppRuntime;
  beforeAll(async () => {
    const linked = await linkModules([
      {
        path: "config.js",
        environment: "isolate",
        source: "export default { get forever() { for (;;) {} }, answer: 42 };",
      },
    ]);
    runtime = await AppRuntime.create(linked, {
      isolates: 1,
      warmContexts: 0,
      contextReuse: false,
    });
  });
  afterAll(() => runtime.dispose());

  it("stops an expression that never returns and keeps working", async () => {
    const started = Date.now();
    await expect(
      runtime.evaluateOnce(`__tessera_app.modules["config.js"].default.forever`, 300),
    ).rejects.toThrow("it did not finish within 0.3 s");
    // Bounded, with room for a slow machine (the point is that it ends at all).
    expect(Date.now() - started).toBeLessThan(30_000);
    await expect(
      runtime.evaluateOnce<number>(`__tessera_app.modules["config.js"].default.answer`),
    ).resolves.toBe(42);
  });
});
