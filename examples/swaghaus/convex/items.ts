import { ConvexError, v } from "convex/values";
import { mutation, query } from "./_generated/server";

const byName = (a: { name: string }, b: { name: string }) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** Every item, in name order (sold-out items stay listed with 0 left). */
export const getItems = query({
  args: {},
  handler: async (ctx) => {
    const items = await ctx.db.query("items").collect();
    return items.sort(byName);
  },
});

/**
 * Takes one of `item` into `user`'s cart. The read of `remaining` and the write
 * that lowers it are one transaction: when two users race for the last one,
 * exactly one of them gets it and the other sees "out of stock".
 */
export const addCart = mutation({
  args: { user: v.string(), item: v.id("items") },
  handler: async (ctx, { user, item }) => {
    const doc = await ctx.db.get(item);
    if (doc === null) throw new ConvexError("no such item");
    if (doc.remaining <= 0) throw new ConvexError(`${doc.name} is out of stock`);
    await ctx.db.patch(item, { remaining: doc.remaining - 1 });
    const cart = await ctx.db
      .query("carts")
      .withIndex("user_item", (q) => q.eq("user", user).eq("item", item))
      .unique();
    if (cart === null) await ctx.db.insert("carts", { user, item, count: 1 });
    else await ctx.db.patch(cart._id, { count: cart.count + 1 });
    return doc.remaining - 1;
  },
});

/** What `user` has taken: one entry per item, in name order. */
export const getCart = query({
  args: { user: v.string() },
  handler: async (ctx, { user }) => {
    const rows = await ctx.db
      .query("carts")
      .withIndex("user_item", (q) => q.eq("user", user))
      .collect();
    const lines = [];
    for (const row of rows) {
      const item = await ctx.db.get(row.item);
      if (item !== null) lines.push({ item: row.item, name: item.name, count: row.count });
    }
    return lines.sort(byName);
  },
});

const STOCK = [
  { name: "Hat", price: 25, remaining: 1 },
  { name: "Mug", price: 12, remaining: 10 },
  { name: "Shirt", price: 30, remaining: 20 },
  { name: "Stickers", price: 3, remaining: 100 },
];

/**
 * Stocks the store if it is empty; returns how many items it inserted (0 when
 * it was stocked already, so running it twice is harmless). Public so that a
 * plain client can call it: the demo has no admin tooling.
 */
export const seed = mutation({
  args: {},
  handler: async (ctx) => {
    if ((await ctx.db.query("items").first()) !== null) return 0;
    for (const item of STOCK) await ctx.db.insert("items", item);
    return STOCK.length;
  },
});
