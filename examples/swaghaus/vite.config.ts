import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The app's root is this folder wherever Vite is started from
// (`npx vite --config examples/swaghaus/vite.config.ts` works from the repo root).
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  plugins: [react()],
});
