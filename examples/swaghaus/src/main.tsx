import { ConvexProvider, ConvexReactClient } from "convex/react";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";

const url = import.meta.env.VITE_CONVEX_URL as string | undefined;
if (!url) {
  throw new Error("Set VITE_CONVEX_URL to the backend's API URL (e.g. http://127.0.0.1:3210)");
}
const convex = new ConvexReactClient(url);

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <ConvexProvider client={convex}>
      <App />
    </ConvexProvider>
  </StrictMode>,
);
