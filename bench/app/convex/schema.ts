import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  docs: defineTable({ n: v.number(), text: v.string() }).index("by_n", ["n"]),
});
