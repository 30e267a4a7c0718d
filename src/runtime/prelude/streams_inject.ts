/**
 * Injected into the prebundled web-streams-polyfill only (see build.ts,
 * INJECTED): its references to the global `structuredClone` read this
 * instead. With none, the polyfill hands byte stream chunks on without
 * transferring their buffers, rather than through a structuredClone that
 * would copy them (it cannot detach).
 */
export const structuredClone = undefined;
