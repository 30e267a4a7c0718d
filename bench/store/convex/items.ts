// The Swaghaus example's functions, served unchanged: the workload is its addCart.
export { addCart, getCart, getItems } from "../../../examples/swaghaus/convex/items.js";
