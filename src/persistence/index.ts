export * from "./fileStore.js";
export * from "./sqlite.js";
export * from "./types.js";
