/** Shared machinery of the benchmark suite: repeated runs, statistics, reporting. */
import { execSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";

export interface Stat {
  median: number;
  min: number;
  max: number;
  runs: number;
}

export interface Row {
  name: string;
  unit: string;
  /** Higher is better (throughput) or lower is better (latency, time). */
  better: "higher" | "lower";
  tessera: Stat;
  baseline?: { label: string; stat: Stat };
  target?: { text: string; met: boolean };
  note?: string;
}

export interface Options {
  quick: boolean;
  runs: number;
  /** Milliseconds per throughput run. */
  durationMs: number;
  /** Documents in the large table (range scans, reopen). */
  docs: number;
  sections: string[] | null;
  /** Concurrent clients of the store comparison. */
  clients: number;
  /** Items in the store at low contention. */
  items: number;
  /** Subscriber counts of the fan-out comparison. */
  subscribers: number[];
}

const FLAGS = `--quick, --runs N, --duration MS, --docs N, --section NAME[,NAME…], --clients N, --items N, --subscribers N[,N…]`;

export function parseOptions(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const number = (flag: string, dflt: number) => {
    const v = value(flag);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0)
      throw new Error(`${flag} needs a positive number, got ${JSON.stringify(v)}`);
    return n;
  };
  const known = FLAGS.split(", ").map((f) => f.split(" ")[0]!);
  for (const a of argv) {
    if (a.startsWith("--") && !known.includes(a))
      throw new Error(`unknown flag ${a} (known: ${FLAGS})`);
  }
  const subscribers = (value("--subscribers") ?? "100,1000").split(",").map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0)
      throw new Error(`--subscribers needs positive integers, got ${JSON.stringify(v)}`);
    return n;
  });
  return {
    quick,
    runs: number("--runs", quick ? 3 : 5),
    durationMs: number("--duration", quick ? 400 : 2000),
    docs: number("--docs", quick ? 50_000 : 1_000_000),
    sections: value("--section")?.split(",") ?? null,
    clients: number("--clients", 16),
    items: number("--items", quick ? 1000 : 10_000),
    subscribers,
  };
}

export function stat(samples: number[]): Stat {
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, runs: s.length };
}

export async function repeat(runs: number, f: () => Promise<number>): Promise<Stat> {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) samples.push(await f());
  return stat(samples);
}

/**
 * Runs `a` and `b` `runs` times each, alternating, each first every other
 * time: this machine's speed drifts within minutes, and both sides then see
 * the same drift.
 */
export async function alternate(
  runs: number,
  a: () => Promise<void>,
  b: () => Promise<void>,
): Promise<void> {
  for (let r = 0; r < runs; r++) {
    for (const run of r % 2 === 0 ? [a, b] : [b, a]) await run();
  }
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function fmt(n: number): string {
  if (n >= 100) return Math.round(n).toLocaleString("en-US");
  if (n >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

export function fmtStat(s: Stat): string {
  return `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

function ratio(row: Row): string {
  if (!row.baseline) return "";
  const r =
    row.better === "higher"
      ? row.tessera.median / row.baseline.stat.median
      : row.baseline.stat.median / row.tessera.median;
  return `${r.toFixed(2)}×`;
}

export function machine() {
  let commit = "unknown";
  try {
    commit = execSync("git rev-parse --short HEAD", { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
    const dirty = execSync("git status --porcelain", { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
    if (dirty) commit += "+dirty";
  } catch {}
  return {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    commit,
    date: new Date().toISOString(),
  };
}

export function markdown(
  sections: Record<string, Row[]>,
  info: ReturnType<typeof machine>,
  options: Options,
): string {
  const lines = [
    "# Tessera benchmark results",
    "",
    `${info.date} · commit ${info.commit} · Node ${info.node} · ${info.cores} cores (${info.cpu}) · ${info.memoryGiB} GiB` +
      ` · ${options.quick ? "quick" : "full"} run, median of ${options.runs} (min–max)`,
    "",
  ];
  for (const [name, rows] of Object.entries(sections)) {
    lines.push(
      `## ${name}`,
      "",
      "| measurement | Tessera | baseline | ratio (Tessera ÷ baseline, >1 = better) | target |",
      "| --- | --- | --- | --- | --- |",
    );
    for (const r of rows) {
      const base = r.baseline ? `${r.baseline.label}: ${fmtStat(r.baseline.stat)}` : "";
      const target = r.target ? `${r.target.text} ${r.target.met ? "✓ met" : "✗ missed"}` : "";
      lines.push(
        `| ${r.name} (${r.unit}) | ${fmtStat(r.tessera)} | ${base} | ${ratio(r)} | ${target} |`,
      );
      if (r.note) lines.push(`|  ↳ ${r.note} | | | | |`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

export function writeResults(sections: Record<string, Row[]>, options: Options): string {
  const info = machine();
  const dir = join(import.meta.dirname, "results");
  mkdirSync(dir, { recursive: true });
  const stamp = info.date.replace(/[:.]/g, "-");
  const md = markdown(sections, info, options);
  const json = JSON.stringify({ machine: info, options, sections }, null, 2);
  for (const name of [
    `${stamp}${options.quick ? "-quick" : ""}`,
    options.quick ? "latest-quick" : "latest",
  ]) {
    writeFileSync(join(dir, `${name}.json`), json);
    writeFileSync(join(dir, `${name}.md`), md);
  }
  return md;
}
