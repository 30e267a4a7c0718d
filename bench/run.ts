/**
 * `npm run bench`: every section of the benchmark suite in one run, each
 * figure with a baseline measured in the same run. `--quick` runs small
 * sizes (CI runs it so the benchmark code keeps working; it asserts that
 * the suite runs, never how fast).
 */
import { fanoutSection } from "./fanout.js";
import { parseOptions, type Row, writeResults } from "./lib.js";
import { runtimeSection } from "./runtime.js";
import { schedulerSection } from "./scheduler.js";
import { storageSection } from "./storage.js";
import { storeSection } from "./store.js";
import { syncSection } from "./sync.js";

const sections: Record<
  string,
  (o: ReturnType<typeof parseOptions>, log: (s: string) => void) => Promise<Row[]>
> = {
  storage: storageSection,
  runtime: runtimeSection,
  sync: syncSection,
  scheduler: schedulerSection,
  store: storeSection,
  fanout: fanoutSection,
};

async function main() {
  const options = parseOptions(process.argv.slice(2));
  const chosen = options.sections ?? Object.keys(sections);
  for (const name of chosen) {
    if (!(name in sections))
      throw new Error(`unknown section ${name} (known: ${Object.keys(sections).join(", ")})`);
  }
  const results: Record<string, Row[]> = {};
  for (const name of chosen) {
    const log = (s: string) => process.stderr.write(`[${name}] ${s}\n`);
    results[name] = await sections[name]!(options, log);
  }
  process.stdout.write(`${writeResults(results, options)}\n`);
}

// Interrupted: exit through process.exit so that 'exit' hooks stop the servers started.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exitCode = 1;
});
