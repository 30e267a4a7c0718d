/**
 * Stands in for the `tr46` package inside whatwg-url (build.ts redirects the
 * import here). tr46 carries Unicode mapping tables that take milliseconds to
 * evaluate in every fresh context; the URL Standard's "domain to ASCII" says
 * that for a non-strict, all-ASCII domain with no label starting with "xn--"
 * the result is just the domain in ASCII lowercase. Only other domains load
 * the real tr46.
 */

interface ToASCIIOptions {
  checkHyphens?: boolean;
  useSTD3ASCIIRules?: boolean;
  verifyDNSLength?: boolean;
}

interface Tr46 {
  toASCII(domain: string, options: ToASCIIOptions): string | null;
  toUnicode(domain: string, options: unknown): { domain: string; error: boolean };
}

let real: Tr46 | undefined;

function load(): Tr46 {
  // "tr46/index.js", not "tr46": build.ts redirects the bare name to this file.
  real ??= require("tr46/index.js") as Tr46;
  return real;
}

const ASCII = /^[\x20-\x7e]*$/;
const PUNYCODE_LABEL = /(?:^|\.)xn--/i;

export function toASCII(domain: string, options: ToASCIIOptions): string | null {
  const strict = options.checkHyphens || options.useSTD3ASCIIRules || options.verifyDNSLength;
  if (!strict && ASCII.test(domain) && !PUNYCODE_LABEL.test(domain)) {
    return domain.toLowerCase();
  }
  return load().toASCII(domain, options);
}

export function toUnicode(domain: string, options: unknown): { domain: string; error: boolean } {
  return load().toUnicode(domain, options);
}
