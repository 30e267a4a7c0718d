/**
 * A bounded cache of the latest version of recently used documents, keyed by
 * ID. An entry is only ever the newest committed version of its document:
 * every commit writes through it, and a version read from storage is only
 * inserted when nothing newer can exist. So a reader at timestamp T can use
 * an entry whose version timestamp is <= T; older readers go to storage.
 */
import type { Document } from "../values/index.js";

export interface CachedVersion {
  ts: bigint;
  /** `null` when the latest version is a deletion. */
  doc: Document | null;
  size: number;
}

export class DocumentCache {
  private readonly map = new Map<string, CachedVersion>();
  private bytes = 0;
  /** IDs that missed recently: a document read from storage is only admitted on its second miss. */
  private recentMisses = new Set<string>();
  private readonly missWindow: number;

  constructor(private readonly maxBytes: number) {
    this.missWindow = Math.max(1024, Math.floor(maxBytes / 4096));
  }

  /**
   * Whether a document just read from storage should enter the cache.
   * Admitting every read would, for random reads over a table much larger
   * than the cache, turn the cache over constantly: each read would allocate
   * a long-lived entry only to evict it later, which costs the garbage
   * collector more than the rare hit saves. A document read twice within the
   * recent-miss window is admitted.
   */
  admit(id: string): boolean {
    if (this.maxBytes <= 0) return false;
    if (this.recentMisses.delete(id)) return true;
    if (this.recentMisses.size >= this.missWindow) this.recentMisses = new Set();
    this.recentMisses.add(id);
    return false;
  }

  /** The cached version of `id` if it is valid at `readTs`. */
  get(id: string, readTs: bigint): CachedVersion | undefined {
    const e = this.map.get(id);
    if (e === undefined || e.ts > readTs) return undefined;
    // Refresh recency (Map iteration order is insertion order).
    this.map.delete(id);
    this.map.set(id, e);
    return e;
  }

  set(id: string, version: CachedVersion): void {
    if (this.maxBytes <= 0) return;
    const old = this.map.get(id);
    if (old !== undefined) {
      if (old.ts > version.ts) return;
      this.bytes -= old.size;
      this.map.delete(id);
    }
    this.map.set(id, version);
    this.bytes += version.size;
    if (this.bytes > this.maxBytes) this.evict();
  }

  /**
   * Drops least recently used entries down to 90 % of the budget. Evicting
   * in bulk matters: a Map keeps deleted slots until it rehashes, so
   * restarting iteration at the front for every single eviction would walk
   * ever more of them.
   */
  private evict(): void {
    const target = this.maxBytes * 0.9;
    for (const [k, v] of this.map) {
      if (this.bytes <= target) break;
      this.map.delete(k);
      this.bytes -= v.size;
    }
  }

  clear(): void {
    this.map.clear();
    this.recentMisses.clear();
    this.bytes = 0;
  }

  get sizeBytes(): number {
    return this.bytes;
  }

  get count(): number {
    return this.map.size;
  }
}

/** Freezes a document and everything inside it, so cached versions can be shared safely. */
export function deepFreeze<T>(value: T): T {
  if (
    typeof value === "object" &&
    value !== null &&
    !(value instanceof ArrayBuffer) &&
    !Object.isFrozen(value)
  ) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
