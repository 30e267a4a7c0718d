import { mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NodeExecutor, writeNodeModules } from "../../src/runtime/nodeExecutor.js";

/** Processes whose working directory is `dir` (the Node.js runtime's child runs there). */
function processesIn(dir: string): number[] {
  const out: number[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (readlinkSync(`/proc/${pid}/cwd`) === dir) out.push(Number(pid));
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

// Importing "use node" modules runs pushed code: an import that never finishes
// must fail the push and end the child, not hold both forever.
describe("NodeExecutor.start", () => {
  const root = mkdtempSync(join(tmpdir(), "tessera-node-executor-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  for (const [what, source] of [
    ["a loop", "while (true) {}\nexport const x = 1;\n"],
    ["a wait that never ends", "await new Promise(() => {});\nexport const x = 1;\n"],
  ] as const) {
    it(`gives up on an import stuck in ${what} and ends the child`, async () => {
      const dir = writeNodeModules(join(root, what.replaceAll(" ", "-")), [
        { path: "stuck.js", source, environment: "node" },
      ]);
      await expect(NodeExecutor.start(dir, ["stuck.js"], 500)).rejects.toThrow(
        "importing them did not finish within 0.5 s",
      );
      const deadline = Date.now() + 10_000;
      while (processesIn(dir).length > 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      expect(processesIn(dir)).toEqual([]);
    });
  }
});
