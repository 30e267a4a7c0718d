/**
 * Contention control for mutations. Under optimistic concurrency, many
 * concurrent calls that write the same documents (one hot item) mostly
 * conflict: each round of a group commit lets one of them through and
 * re-runs the rest, and the one that just won starts again first, so the
 * same callers can lose round after round. A function whose calls keep
 * conflicting is therefore run one call at a time, in arrival order, each
 * call beginning its transaction once the previous one has committed: no
 * wasted executions, no starvation. It goes back to running calls in
 * parallel once its conflicts die down.
 */

/** Conflict score above which a function's calls are serialised, and below which they are not. */
const SERIALISE_ABOVE = 3;
const PARALLEL_BELOW = 0.5;
/** Each committed call multiplies the score by this; each conflict adds one. */
const DECAY = 0.95;

export class ContentionLane {
  private score = 0;
  private serial = false;
  private tail: Promise<void> = Promise.resolve();

  /** Whether calls currently run one at a time. */
  get serialised(): boolean {
    return this.serial;
  }

  /** Waits for this call's turn when calls are serialised; returns the release. */
  async enter(): Promise<(() => void) | null> {
    if (!this.serial) return null;
    let release!: () => void;
    const turn = new Promise<void>((resolve) => {
      release = resolve;
    });
    const previous = this.tail;
    this.tail = previous.then(() => turn);
    await previous;
    return release;
  }

  conflicted(): void {
    this.score += 1;
    if (this.score > SERIALISE_ABOVE) this.serial = true;
  }

  committed(): void {
    this.score *= DECAY;
    if (this.score < PARALLEL_BELOW) this.serial = false;
  }
}

/** One lane per function path. */
export class ContentionLanes {
  private readonly lanes = new Map<string, ContentionLane>();

  of(path: string): ContentionLane {
    let lane = this.lanes.get(path);
    if (lane === undefined) {
      lane = new ContentionLane();
      this.lanes.set(path, lane);
    }
    return lane;
  }
}
