/* Stand-in for what `npx convex codegen` generates (untyped form). */
import { anyApi } from "convex/server";

export const api = anyApi;
export const internal = anyApi;
