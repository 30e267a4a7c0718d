import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    // Two cores on CI: keep parallelism modest so crash and timing-sensitive
    // tests are not starved.
    maxWorkers: 2,
    // isolated-vm requires it on Node 20 and later (see its README).
    execArgv: ["--no-node-snapshot"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // expect.poll gives up after 1 s by default: too soon for a server process on a loaded machine.
    expect: { poll: { timeout: 20_000 } },
  },
});
