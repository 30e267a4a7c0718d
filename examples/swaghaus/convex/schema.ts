import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  // What the store sells and how many of each are left.
  items: defineTable({
    name: v.string(),
    price: v.number(),
    remaining: v.number(),
  }).index("remaining", ["remaining"]),
  // One row per (user, item): how many of that item the user has taken.
  carts: defineTable({
    user: v.string(),
    item: v.id("items"),
    count: v.number(),
  }).index("user_item", ["user", "item"]),
});
