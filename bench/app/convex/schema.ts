import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  docs: defineTable({ n: v.number(), text: v.string() }).index("by_n", ["n"]),
  jobruns: defineTable({ scheduledTime: v.number(), startedAt: v.number() }).index("by_scheduled", [
    "scheduledTime",
  ]),
});
