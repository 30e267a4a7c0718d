/**
 * The app's auth providers: its bundled `auth.config.js`, evaluated in an
 * isolate like any user code, with the deployment's environment variables as
 * `process.env` (the CLI's templates read e.g. `process.env.CLERK_JWT_ISSUER_DOMAIN`
 * or `process.env.CONVEX_SITE_URL` there), and checked against the shapes of
 * `AuthProvider` in `convex/server` (`authentication.ts`).
 */
import { AppRuntime } from "../runtime/appRuntime.js";
import { type LinkedApp, linkModules } from "../runtime/loader.js";
import type { ModuleSource } from "../runtime/modules.js";

/** An OpenID Connect provider: tokens with `iss` = `domain` and `applicationID` in `aud`. */
export interface OidcProvider {
  type: "oidc";
  domain: string;
  applicationID: string;
}

/** A custom JWT provider: tokens with `iss` = `issuer`, signed by a key of `jwks` with `algorithm`. */
export interface CustomJwtProvider {
  type: "customJwt";
  issuer: string;
  /** A URL of the key set, or a `data:` URI holding it. */
  jwks: string;
  algorithm: "RS256" | "ES256";
  /** Required in `aud` when set; null: the audience is not checked. */
  applicationID: string | null;
}

export type AuthProvider = OidcProvider | CustomJwtProvider;

export type AuthConfigErrorCode = "AuthConfigMissingEnvironmentVariable" | "InvalidAuthConfig";

/** A config that cannot be used; `code` is what the official CLI reads (see its `handlePushConfigError`). */
export class AuthConfigError extends Error {
  override name = "AuthConfigError";
  constructor(
    readonly code: AuthConfigErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The providers as the CLI's `authInfo` schema describes them (start_push's `appAuth`). */
export function authInfoOf(p: AuthProvider): Record<string, unknown> {
  if (p.type === "oidc") return { applicationID: p.applicationID, domain: p.domain };
  return {
    type: "customJwt",
    applicationID: p.applicationID,
    issuer: p.issuer,
    jwks: p.jwks,
    algorithm: p.algorithm,
  };
}

/** One line per provider, for messages and the push's auth diff. */
export function describeProvider(p: AuthProvider): string {
  return p.type === "oidc"
    ? `OIDC provider ${p.domain} (applicationID ${JSON.stringify(p.applicationID)})`
    : `custom JWT provider ${p.issuer} (${p.algorithm}, applicationID ${JSON.stringify(p.applicationID)})`;
}

/** The algorithms Convex documents for custom JWT providers. */
const CUSTOM_JWT_ALGORITHMS = new Set(["RS256", "ES256"]);

/**
 * Evaluates a bundled `auth.config.js` with `environment` as `process.env`
 * and returns its providers. Throws an `AuthConfigError`: with code
 * `AuthConfigMissingEnvironmentVariable` when the config is invalid and read
 * a variable that is not set (the likely cause), else `InvalidAuthConfig`.
 */
export async function evaluateAuthConfig(
  module: ModuleSource,
  environment: Readonly<Record<string, string>>,
): Promise<AuthProvider[]> {
  let linked: LinkedApp;
  try {
    linked = await linkModules([{ ...module, path: "auth.config.js", environment: "isolate" }]);
  } catch (e) {
    throw new AuthConfigError("InvalidAuthConfig", `auth.config.ts: ${messageOf(e)}`);
  }
  const runtime = await AppRuntime.create(withEnvironment(linked, environment), {
    isolates: 1,
    warmContexts: 0,
    contextReuse: false,
  }).catch((e: unknown) => {
    throw new AuthConfigError(
      "InvalidAuthConfig",
      `auth.config.ts failed to load: ${messageOf(e)}`,
    );
  });
  let evaluated: { config: unknown; missing: string[] };
  try {
    const text = await runtime.evaluateOnce<string>(
      `(() => { const c = __tessera_app.modules["auth.config.js"].default; return JSON.stringify({ config: c === undefined ? "__tessera_no_default__" : c, missing: globalThis.__tessera_auth_missing }); })()`,
    );
    evaluated = JSON.parse(text) as { config: unknown; missing: string[] };
  } catch (e) {
    throw new AuthConfigError("InvalidAuthConfig", `auth.config.ts failed: ${messageOf(e)}`);
  } finally {
    runtime.dispose();
  }
  try {
    return parseAuthConfig(evaluated.config);
  } catch (e) {
    const missing = [...new Set(evaluated.missing)];
    if (missing.length > 0)
      throw new AuthConfigError(
        "AuthConfigMissingEnvironmentVariable",
        `Environment variable ${missing[0]} is used in auth config file but its value was not set (${messageOf(e)})`,
      );
    throw e;
  }
}

/**
 * The linked config with a first statement that gives it `process.env`:
 * the variables, and a record of names read that are not set.
 */
function withEnvironment(
  linked: LinkedApp,
  environment: Readonly<Record<string, string>>,
): LinkedApp {
  const values = JSON.stringify(environment);
  const snippet =
    `(() => { const values = Object.assign(Object.create(null), ${values}); const missing = [];` +
    ` const env = new Proxy(values, { get: (t, k) => { if (typeof k !== "string") return undefined; if (!(k in t)) missing.push(k); return t[k]; } });` +
    ` Object.defineProperty(globalThis, "process", { value: Object.freeze({ env }), writable: true, configurable: true });` +
    ` Object.defineProperty(globalThis, "__tessera_auth_missing", { value: missing }); })();`;
  // After the "use strict" line, as a line of its own: the source map moves down one line.
  const nl = linked.script.indexOf("\n");
  const script =
    nl < 0
      ? `${snippet}\n${linked.script}`
      : `${linked.script.slice(0, nl + 1)}${snippet}\n${linked.script.slice(nl + 1)}`;
  const map = JSON.parse(linked.sourceMap) as { mappings: string };
  const lines = map.mappings.split(";");
  lines.splice(nl < 0 ? 0 : 1, 0, "");
  map.mappings = lines.join(";");
  return { ...linked, script, sourceMap: JSON.stringify(map) };
}

/** Checks an evaluated config (`export default { providers: [...] }`). */
export function parseAuthConfig(config: unknown): AuthProvider[] {
  const bad = (what: string): never => {
    throw new AuthConfigError("InvalidAuthConfig", `Invalid auth.config.ts: ${what}`);
  };
  if (config === "__tessera_no_default__")
    bad("it must have a default export: export default { providers: [...] }");
  if (!isObject(config)) return bad("its default export must be an object { providers: [...] }");
  const providers = config.providers;
  if (!Array.isArray(providers))
    return bad("its default export must have a list `providers` (an empty list for none)");
  return providers.map((p, i) => parseProvider(p, `providers[${i}]`, bad));
}

function parseProvider(p: unknown, at: string, bad: (what: string) => never): AuthProvider {
  if (!isObject(p)) return bad(`${at} must be an object`);
  const text = (field: string): string => {
    const v = p[field];
    if (typeof v !== "string" || v === "")
      return bad(
        `${at}.${field} must be a non-empty string, got ${v === undefined ? "nothing" : JSON.stringify(v)}`,
      );
    return v;
  };
  const url = (field: string, value: string): void => {
    const protocol = URL.canParse(value) ? new URL(value).protocol : null;
    if (protocol !== "https:" && protocol !== "http:")
      bad(`${at}.${field} must be an http(s) URL, got ${JSON.stringify(value)}`);
  };
  if (p.type === "customJwt") {
    const issuer = text("issuer");
    const jwks = text("jwks");
    if (!jwks.startsWith("data:")) url("jwks", jwks);
    const algorithm = text("algorithm");
    if (!CUSTOM_JWT_ALGORITHMS.has(algorithm))
      bad(`${at}.algorithm must be "RS256" or "ES256", got ${JSON.stringify(algorithm)}`);
    const appId = p.applicationID;
    if (appId !== undefined && appId !== null && (typeof appId !== "string" || appId === ""))
      bad(
        `${at}.applicationID must be a non-empty string when given, got ${JSON.stringify(appId)}`,
      );
    return {
      type: "customJwt",
      issuer,
      jwks,
      algorithm: algorithm as "RS256" | "ES256",
      applicationID: typeof appId === "string" ? appId : null,
    };
  }
  if (p.type !== undefined && p.type !== "oidc")
    return bad(
      `${at}.type must be "customJwt" (or left out for an OIDC provider), got ${JSON.stringify(p.type)}`,
    );
  const domain = text("domain");
  url("domain", domain);
  return { type: "oidc", domain, applicationID: text("applicationID") };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The message, without the host's side of an isolate's stack. */
function messageOf(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  const host = m.indexOf("\n    at (<isolated-vm boundary>)");
  return host < 0 ? m : m.slice(0, host);
}
