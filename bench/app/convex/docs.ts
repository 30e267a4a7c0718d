import { v } from "convex/values";
import { mutation, query } from "./_generated/server";

/** (a) a query reading one document by ID */
export const get = query({
  args: { id: v.id("docs") },
  handler: async (ctx, { id }) => ctx.db.get(id),
});

/** (b) a mutation inserting one document */
export const insert = mutation({
  args: { n: v.number(), text: v.string() },
  handler: async (ctx, args) => ctx.db.insert("docs", args),
});

/** (c) a query scanning 100 documents of an index range */
export const scan = query({
  args: { from: v.number() },
  handler: async (ctx, { from }) =>
    (
      await ctx.db
        .query("docs")
        .withIndex("by_n", (q) => q.gte("n", from))
        .take(100)
    ).length,
});

/** Loads `count` documents in one mutation (setup, not measured). */
export const load = mutation({
  args: { start: v.number(), count: v.number() },
  handler: async (ctx, { start, count }) => {
    const ids = [];
    for (let i = start; i < start + count; i++)
      ids.push(await ctx.db.insert("docs", { n: i, text: `doc ${i}` }));
    return ids;
  },
});

/** Changes one document (sync section: what subscribers wait for). */
export const touch = mutation({
  args: { id: v.id("docs"), text: v.string() },
  handler: async (ctx, { id, text }) => ctx.db.patch(id, { text }),
});
