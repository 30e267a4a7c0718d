/**
 * Verifies the JWTs clients send (`setAuth` on the WebSocket, `Authorization:
 * Bearer` on HTTP) against the app's auth providers (authConfig.ts) with
 * `jose`: the provider is picked by the token's issuer, then the signature
 * (a key of the provider's key set), the audience (`applicationID`), the
 * algorithm and the expiry (with a few seconds of clock skew) are checked.
 * Key sets are fetched once and kept (`createRemoteJWKSet`: refetched after
 * 10 minutes, and at once for a key id it does not know unless it was fetched
 * less than 5 s ago); OIDC providers' key set URLs come from their discovery
 * document (`<domain>/.well-known/openid-configuration`), kept for an hour.
 * The identity is what `ctx.auth.getUserIdentity()` returns.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from "jose";
import type { UserIdentity } from "../runtime/syscalls.js";
import { checkNestedFieldName, toJson, type Value } from "../values/index.js";
import { type AuthProvider, describeProvider } from "./authConfig.js";

/** A token that was refused; the message says which check failed, for the client. */
export class TokenError extends Error {
  override name = "TokenError";
}

export interface VerifiedToken {
  identity: UserIdentity;
  /** When the token expires (its `exp`, plus the clock tolerance), ms since the epoch. */
  expiresAtMs: number;
}

export interface TokenVerifierOptions {
  /** Clock skew allowed for `exp` and `nbf`, in seconds (default 5). */
  clockToleranceSec?: number;
  /** A key id not in a fetched key set refetches it only this long after the last fetch (default 5 s). */
  jwksCooldownMs?: number;
  /** Key sets are refetched when older than this (default 10 minutes). */
  jwksMaxAgeMs?: number;
  /** OIDC discovery documents are kept this long (default 1 hour). */
  discoveryMaxAgeMs?: number;
  /** Timeout of each fetch (default 5 s). */
  fetchTimeoutMs?: number;
}

/** Signature algorithms accepted from OIDC providers (asymmetric only: the key set is public). */
const OIDC_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
];

/** Standard OIDC claims and the `UserIdentity` fields they become (`convex/server` authentication.ts). */
const STANDARD_CLAIMS: ReadonlyArray<[claim: string, field: string, type: "string" | "boolean"]> = [
  ["name", "name", "string"],
  ["given_name", "givenName", "string"],
  ["family_name", "familyName", "string"],
  ["nickname", "nickname", "string"],
  ["preferred_username", "preferredUsername", "string"],
  ["profile", "profileUrl", "string"],
  ["picture", "pictureUrl", "string"],
  ["email", "email", "string"],
  ["email_verified", "emailVerified", "boolean"],
  ["gender", "gender", "string"],
  ["birthdate", "birthday", "string"],
  ["zoneinfo", "timezone", "string"],
  ["locale", "language", "string"],
  ["phone_number", "phoneNumber", "string"],
  ["phone_number_verified", "phoneNumberVerified", "boolean"],
  ["address", "address", "string"],
  ["updated_at", "updatedAt", "string"],
];
const STANDARD = new Set(STANDARD_CLAIMS.map(([claim]) => claim));
/** Registered JWT claims: about the token, not the user, so not part of the identity. */
const REGISTERED = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]);

interface Discovery {
  jwksUri: Promise<string>;
  fetchedAtMs: number;
}

export class TokenVerifier {
  private readonly clockToleranceSec: number;
  private readonly cooldownMs: number;
  private readonly jwksMaxAgeMs: number;
  private readonly discoveryMaxAgeMs: number;
  private readonly fetchTimeoutMs: number;
  /** Key sets by URL (or `data:` URI). */
  private readonly keySets = new Map<string, JWTVerifyGetKey>();
  /** OIDC discovery by domain. */
  private readonly discoveries = new Map<string, Discovery>();

  constructor(options: TokenVerifierOptions = {}) {
    this.clockToleranceSec = options.clockToleranceSec ?? 5;
    this.cooldownMs = options.jwksCooldownMs ?? 5_000;
    this.jwksMaxAgeMs = options.jwksMaxAgeMs ?? 10 * 60_000;
    this.discoveryMaxAgeMs = options.discoveryMaxAgeMs ?? 60 * 60_000;
    this.fetchTimeoutMs = options.fetchTimeoutMs ?? 5_000;
  }

  /** The identity `token` carries, if one of `providers` issued it; else a `TokenError`. */
  async verify(token: string, providers: readonly AuthProvider[]): Promise<VerifiedToken> {
    let claims: JWTPayload;
    try {
      claims = decodeJwt(token);
      decodeProtectedHeader(token);
    } catch (e) {
      throw new TokenError(
        `Could not decode the token: it is not a signed JWT (${(e as Error).message})`,
      );
    }
    const iss = claims.iss;
    if (typeof iss !== "string" || iss === "")
      throw new TokenError("The token has no issuer (its iss claim is missing)");
    const candidates = providers.filter((p) =>
      sameIssuer(iss, p.type === "oidc" ? p.domain : p.issuer),
    );
    if (candidates.length === 0) {
      const accepted = providers.map((p) => (p.type === "oidc" ? p.domain : p.issuer));
      throw new TokenError(
        providers.length === 0
          ? "No auth provider found matching the given token: this deployment has no auth providers (convex/auth.config.ts)"
          : `No auth provider found matching the given token: its issuer (iss) is ${JSON.stringify(iss)}, but the auth.config.ts providers accept ${accepted.map((a) => JSON.stringify(a)).join(", ")}`,
      );
    }
    // The first provider that accepts the token wins (as the docs describe).
    const failures: string[] = [];
    for (const provider of candidates) {
      try {
        return await this.verifyWith(token, iss, provider);
      } catch (e) {
        failures.push(
          candidates.length === 1
            ? this.reason(e, provider)
            : `${describeProvider(provider)}: ${this.reason(e, provider)}`,
        );
      }
    }
    throw new TokenError(`Invalid token: ${failures.join("; ")}`);
  }

  private async verifyWith(
    token: string,
    iss: string,
    provider: AuthProvider,
  ): Promise<VerifiedToken> {
    const keys = await this.keySetOf(provider);
    const audience = provider.applicationID;
    const { payload } = await jwtVerify(token, keys, {
      issuer: iss,
      ...(audience !== null ? { audience } : {}),
      algorithms: provider.type === "customJwt" ? [provider.algorithm] : OIDC_ALGORITHMS,
      clockTolerance: this.clockToleranceSec,
      requiredClaims: ["sub", "exp"],
    });
    // jose checks that `sub` is there, not what it is: the identity's subject is a string.
    if (typeof payload.sub !== "string")
      throw new TokenError("the token's sub claim must be a string");
    return {
      identity: identityOf(payload, iss),
      expiresAtMs: ((payload.exp as number) + this.clockToleranceSec) * 1000,
    };
  }

  /** Why verification failed, as a sentence for the client. */
  private reason(e: unknown, provider: AuthProvider): string {
    if (e instanceof TokenError) return e.message;
    if (e instanceof errors.JWTExpired) {
      const exp = e.payload.exp as number;
      return `Token expired: it expired at ${timeText(exp)} (exp), ${Math.round(Date.now() / 1000 - exp)} s ago`;
    }
    if (e instanceof errors.JWTClaimValidationFailed) {
      if (e.reason === "missing") return `the token has no ${e.claim} claim, which is required`;
      if (e.claim === "aud")
        return `the token's audience (aud ${JSON.stringify(e.payload.aud ?? null)}) does not include the provider's applicationID ${JSON.stringify(provider.applicationID)}`;
      const nbf = e.payload.nbf;
      // Only a number is a time: jose reports an nbf of another type under this claim too.
      if (e.claim === "nbf" && typeof nbf === "number")
        return `the token is not valid yet (nbf ${timeText(nbf)})`;
      return `the token's ${e.claim} claim is not valid (${e.message})`;
    }
    if (e instanceof errors.JOSEAlgNotAllowed)
      return `the token is signed with an algorithm the provider does not accept (accepted: ${
        provider.type === "customJwt" ? provider.algorithm : OIDC_ALGORITHMS.join(", ")
      })`;
    if (e instanceof errors.JWSSignatureVerificationFailed)
      return "the token's signature does not verify with the provider's key (a bad signature, or a token from another key)";
    if (e instanceof errors.JWKSNoMatchingKey)
      return `no key of the provider's key set (${jwksLabel(provider)}) matches the token's key id (kid) and algorithm; a key set fetched less than ${this.cooldownMs / 1000} s ago is not fetched again`;
    if (e instanceof errors.JWKSMultipleMatchingKeys)
      return "several keys of the provider's key set match the token; it must name its key (kid)";
    if (e instanceof errors.JWKSTimeout)
      return `fetching the provider's key set (${jwksLabel(provider)}) timed out`;
    if (e instanceof errors.JWKSInvalid)
      return `the provider's key set (${jwksLabel(provider)}) is not a valid JSON Web Key Set`;
    if (e instanceof errors.JWTInvalid || e instanceof errors.JWSInvalid)
      return `the token is malformed (${e.message})`;
    if (e instanceof errors.JOSEError) return `${e.code}: ${e.message}`;
    return `could not fetch the provider's key set (${jwksLabel(provider)}): ${(e as Error).message ?? String(e)}`;
  }

  private async keySetOf(provider: AuthProvider): Promise<JWTVerifyGetKey> {
    const url =
      provider.type === "customJwt" ? provider.jwks : await this.discoverJwksUri(provider.domain);
    let keys = this.keySets.get(url);
    if (keys === undefined) {
      keys = url.startsWith("data:")
        ? createLocalJWKSet(parseDataUriJwks(url))
        : createRemoteJWKSet(new URL(url), {
            cooldownDuration: this.cooldownMs,
            cacheMaxAge: this.jwksMaxAgeMs,
            timeoutDuration: this.fetchTimeoutMs,
          });
      this.keySets.set(url, keys);
    }
    return keys;
  }

  /** The `jwks_uri` of an OIDC provider's discovery document. */
  private discoverJwksUri(domain: string): Promise<string> {
    const now = Date.now();
    const known = this.discoveries.get(domain);
    if (known !== undefined && now - known.fetchedAtMs < this.discoveryMaxAgeMs)
      return known.jwksUri;
    const url = `${domain.replace(/\/+$/, "")}/.well-known/openid-configuration`;
    const jwksUri = (async () => {
      let doc: unknown;
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(this.fetchTimeoutMs) });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        doc = await res.json();
      } catch (e) {
        throw new TokenError(
          `could not fetch the OIDC discovery document ${url}: ${(e as Error).message}`,
        );
      }
      const uri = (doc as { jwks_uri?: unknown } | null)?.jwks_uri;
      if (typeof uri !== "string" || !/^https?:\/\//.test(uri))
        throw new TokenError(`the OIDC discovery document ${url} has no http(s) jwks_uri`);
      return uri;
    })();
    const entry: Discovery = { jwksUri, fetchedAtMs: now };
    this.discoveries.set(domain, entry);
    // A failure is kept only for the cooldown, then the next token tries again.
    jwksUri.catch(() => {
      entry.fetchedAtMs = Date.now() - this.discoveryMaxAgeMs + this.cooldownMs;
    });
    return jwksUri;
  }
}

function sameIssuer(a: string, b: string): boolean {
  return a.replace(/\/+$/, "") === b.replace(/\/+$/, "");
}

function jwksLabel(p: AuthProvider): string {
  if (p.type === "oidc") return `from ${p.domain}/.well-known/openid-configuration`;
  return p.jwks.startsWith("data:") ? "the jwks data: URI" : p.jwks;
}

/** A key set written into the config as a `data:` URI (base64 or percent-encoded JSON). */
function parseDataUriJwks(uri: string): JSONWebKeySet {
  const comma = uri.indexOf(",");
  const meta = uri.slice(5, comma < 0 ? 5 : comma);
  const data = comma < 0 ? "" : uri.slice(comma + 1);
  try {
    const text = meta.split(";").includes("base64")
      ? Buffer.from(decodeURIComponent(data), "base64").toString("utf8")
      : decodeURIComponent(data);
    const parsed = JSON.parse(text) as JSONWebKeySet;
    if (!Array.isArray(parsed?.keys)) throw new Error("no keys");
    return parsed;
  } catch {
    throw new TokenError(
      "the provider's jwks data: URI does not hold a JSON Web Key Set ({keys: [...]})",
    );
  }
}

/**
 * `ctx.auth.getUserIdentity()` for verified claims: `tokenIdentifier`
 * (`iss|sub`), `subject`, `issuer`, the standard OIDC claims under their
 * camelCase names, and every other claim as it is (registered JWT claims
 * such as `exp` and `aud` describe the token, not the user, and are left
 * out; so are claims that are not valid Convex values, e.g. with a key
 * starting with `$`).
 */
export function identityOf(claims: JWTPayload, iss: string): UserIdentity {
  const identity: Record<string, Value> = {};
  for (const [claim, value] of Object.entries(claims)) {
    if (REGISTERED.has(claim) || STANDARD.has(claim) || value === undefined) continue;
    try {
      checkNestedFieldName(claim);
      toJson(value as Value);
    } catch {
      continue;
    }
    identity[claim] = value as Value;
  }
  for (const [claim, field, type] of STANDARD_CLAIMS) {
    const value = claims[claim];
    const v = type === "boolean" ? asBoolean(value) : asString(value);
    if (v !== undefined) identity[field] = v;
  }
  const sub = claims.sub as string;
  identity.subject = sub;
  identity.issuer = iss;
  identity.tokenIdentifier = `${iss}|${sub}`;
  return identity as UserIdentity;
}

/** A time claim (seconds since the epoch) as an ISO date, or as the number when no date is that far. */
function timeText(seconds: number): string {
  const date = new Date(seconds * 1000);
  return Number.isNaN(date.getTime()) ? String(seconds) : date.toISOString();
}

function asString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (typeof v === "object" && v !== null) return JSON.stringify(v);
  return undefined;
}

function asBoolean(v: unknown): boolean | undefined {
  if (typeof v === "boolean") return v;
  if (v === "true") return true;
  if (v === "false") return false;
  return undefined;
}
