export * from "./sqlite.js";
export * from "./types.js";
