// The Swaghaus example's schema, served unchanged.
export { default } from "../../../examples/swaghaus/convex/schema.js";
