import { mutationGeneric as mutation } from "convex/server";
import { v } from "convex/values";

/**
 * Stocks `count` items named from `start` with `remaining` each (setup, not
 * measured; the example's own seed stocks four items with a handful left).
 */
export const fill = mutation({
  args: { start: v.number(), count: v.number(), remaining: v.number() },
  handler: async (ctx, { start, count, remaining }) => {
    const ids = [];
    for (let i = start; i < start + count; i++)
      ids.push(await ctx.db.insert("items", { name: `item ${i}`, price: 1 + (i % 50), remaining }));
    return ids;
  },
});
