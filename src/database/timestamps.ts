/**
 * Commit timestamps: int64 nanoseconds since the Unix epoch, strictly
 * increasing. They follow the wall clock when it moves forward and keep
 * counting up by one when it stalls or moves backwards, so a timestamp is
 * never reused, also across restarts (the oracle starts above the largest
 * persisted timestamp).
 */
export class TimestampOracle {
  private last: bigint;
  private readonly wallNs: () => bigint;

  constructor(lastPersisted: bigint, wallNs: () => bigint = defaultWallNs) {
    this.last = lastPersisted;
    this.wallNs = wallNs;
  }

  next(): bigint {
    const now = this.wallNs();
    this.last = now > this.last ? now : this.last + 1n;
    return this.last;
  }

  /** The largest timestamp handed out so far. */
  peek(): bigint {
    return this.last;
  }
}

const originWallMs = Date.now();
const originHr = process.hrtime.bigint();

/** Wall-clock nanoseconds: `Date.now()` at start-up plus the monotonic clock since. */
export function defaultWallNs(): bigint {
  return BigInt(originWallMs) * 1_000_000n + (process.hrtime.bigint() - originHr);
}
