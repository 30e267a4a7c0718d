import type { GenericDataModel, GenericQueryCtx } from "convex/server";
import { v } from "convex/values";
import { api } from "./_generated/api";
import { mutation, query } from "./_generated/server";

/** Schedules `n` runs of `record`, due `gapMs` apart from `start` (0: all at once, a burst). */
export const scheduleSpaced = mutation({
  args: { n: v.number(), start: v.number(), gapMs: v.number() },
  handler: async (ctx, { n, start, gapMs }) => {
    for (let i = 0; i < n; i++) {
      const at = start + i * gapMs;
      await ctx.scheduler.runAt(at, api.sched.record, { scheduledTime: at });
    }
  },
});

/** A scheduled job: records when it started against when it was due. */
export const record = mutation({
  args: { scheduledTime: v.number() },
  handler: async (ctx, { scheduledTime }) => {
    await ctx.db.insert("jobruns", { scheduledTime, startedAt: Date.now() });
  },
});

/** The recorded runs due at or after `from`. */
const runsFrom = (ctx: GenericQueryCtx<GenericDataModel>, from: number) =>
  ctx.db
    .query("jobruns")
    .withIndex("by_scheduled", (q) => q.gte("scheduledTime", from))
    .collect();

/** How many runs due at or after `from` were recorded. */
export const count = query({
  args: { from: v.number() },
  handler: async (ctx, { from }) => (await runsFrom(ctx, from)).length,
});

/** Due-to-start delays (ms) of the recorded runs due at or after `from`. */
export const delays = query({
  args: { from: v.number() },
  handler: async (ctx, { from }) =>
    (await runsFrom(ctx, from)).map((r) => r.startedAt - r.scheduledTime),
});
