/**
 * Maps stack traces from positions in the linked app script back to the
 * user's source files, through the chained source map (see loader.ts), and
 * drops frames of Tessera's own in-isolate scripts.
 */
import { originalPositionFor, TraceMap } from "@jridgewell/trace-mapping";
import { APP_SCRIPT_NAME } from "./loader.js";

const FRAME = /^(\s*at\s+)(?:(.*?)\s+\()?(tessera:[\w.-]+):(\d+):(\d+)\)?$/;

export class StackMapper {
  private readonly map: TraceMap;

  constructor(sourceMap: string) {
    this.map = new TraceMap(sourceMap);
  }

  /** Rewrites `at f (tessera:app.js:L:C)` frames to `at f (../convex/file.ts:L:C)`; removes runtime frames. */
  mapStack(stack: string): string {
    const out: string[] = [];
    for (const line of stack.split("\n")) {
      const m = FRAME.exec(line);
      if (m === null) {
        out.push(line);
        continue;
      }
      const [, prefix, fn, file, l, c] = m;
      if (file !== APP_SCRIPT_NAME) continue;
      const pos = originalPositionFor(this.map, { line: Number(l), column: Number(c) - 1 });
      if (pos.source === null) {
        out.push(line);
        continue;
      }
      const name = pos.name ?? fn;
      const where = `${pos.source}:${pos.line}:${(pos.column ?? 0) + 1}`;
      out.push(name ? `${prefix}${name} (${where})` : `${prefix}${where}`);
    }
    return out.join("\n");
  }
}
