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
  },
});
