/**
 * Evaluated on first use of `crypto`, `Crypto` or `SubtleCrypto` (see
 * globals.ts: it exports nothing on purpose).
 */
import { Crypto, createCrypto, SubtleCrypto } from "./crypto.js";
import { provideGlobals } from "./util.js";

provideGlobals({ crypto: createCrypto(), Crypto, SubtleCrypto });
