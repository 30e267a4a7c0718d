// `node --import ./bin/ts-register.mjs file.ts` runs a TypeScript entry point (see ts-hooks.mjs).
import { register } from "node:module";

process.setSourceMapsEnabled(true);
register("./ts-hooks.mjs", import.meta.url);
