/**
 * auth.config.ts evaluation and token verification without a server: the
 * config's validation and its environment variables, identities made of odd
 * claims, `data:` key sets, and the checks that refuse a token.
 */

import fc from "fast-check";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import {
  type AuthProvider,
  evaluateAuthConfig,
  parseAuthConfig,
} from "../../src/functions/authConfig.js";
import { identityOf, TokenError, TokenVerifier } from "../../src/functions/userTokens.js";

const module = (source: string) => ({
  path: "auth.config.js",
  environment: "isolate" as const,
  source,
});

describe("evaluateAuthConfig", () => {
  it("evaluates the config with the environment as process.env", async () => {
    const providers = await evaluateAuthConfig(
      module(
        `export default { providers: [
          { domain: process.env.DOMAIN, applicationID: "convex" },
          { type: "customJwt", issuer: process.env.ISSUER ?? "fallback", jwks: "https://a.example/jwks", algorithm: "RS256", applicationID: "app" },
        ] };`,
      ),
      { DOMAIN: "https://issuer.example" },
    );
    expect(providers).toEqual([
      { type: "oidc", domain: "https://issuer.example", applicationID: "convex" },
      {
        type: "customJwt",
        issuer: "fallback",
        jwks: "https://a.example/jwks",
        algorithm: "RS256",
        applicationID: "app",
      },
    ]);
  });

  it("names an unset environment variable the invalid config read, with the CLI's code", async () => {
    const e = await evaluateAuthConfig(
      module(
        `export default { providers: [{ domain: process.env.CLERK_JWT_ISSUER_DOMAIN, applicationID: "convex" }] };`,
      ),
      {},
    ).catch((x: unknown) => x as { code: string; message: string });
    expect(e).toMatchObject({
      code: "AuthConfigMissingEnvironmentVariable",
      message: expect.stringMatching(
        /^Environment variable CLERK_JWT_ISSUER_DOMAIN is used in auth config file but its value was not set/,
      ),
    });
  });

  it("refuses configs that are not valid, saying what is wrong", async () => {
    const cases: Array<[string, RegExp]> = [
      ["export const x = 1;", /must have a default export/],
      ["export default { providers: 1 };", /must have a list `providers`/],
      [
        `export default { providers: [{ domain: "ftp://x", applicationID: "a" }] };`,
        /providers\[0\]\.domain must be an http\(s\) URL/,
      ],
      [
        `export default { providers: [{ domain: "https://x" }] };`,
        /providers\[0\]\.applicationID must be a non-empty string, got nothing/,
      ],
      [
        `export default { providers: [{ type: "customJwt", issuer: "i", jwks: "https://x/j", algorithm: "HS256" }] };`,
        /algorithm must be "RS256" or "ES256"/,
      ],
      [`export default { providers: [{ type: "saml" }] };`, /type must be "customJwt"/],
      [`throw new Error("boom");`, /auth.config.ts failed to load: .*boom/],
    ];
    for (const [source, message] of cases) {
      const e = await evaluateAuthConfig(module(source), {}).catch((x: unknown) => x as Error);
      expect(e).toBeInstanceOf(Error);
      expect((e as Error & { code: string }).code).toBe("InvalidAuthConfig");
      expect((e as Error).message).toMatch(message);
    }
  });

  it("accepts an empty provider list and a custom JWT without applicationID", () => {
    expect(parseAuthConfig({ providers: [] })).toEqual([]);
    expect(
      parseAuthConfig({
        providers: [
          { type: "customJwt", issuer: "x", jwks: "data:text/plain,{}", algorithm: "ES256" },
        ],
      }),
    ).toEqual([
      {
        type: "customJwt",
        issuer: "x",
        jwks: "data:text/plain,{}",
        algorithm: "ES256",
        applicationID: null,
      },
    ]);
  });
});

describe("identityOf", () => {
  it("maps standard claims to their camelCase fields and keeps other claims as they are", () => {
    const identity = identityOf(
      {
        iss: "https://i.example",
        sub: "u",
        aud: "a",
        exp: 1,
        iat: 0,
        nbf: 0,
        jti: "j",
        email_verified: "true",
        phone_number_verified: "nope",
        updated_at: 1700000000,
        address: { street_address: "1 Main St" },
        $weird: 1,
        "https://example.com/roles": ["admin"],
        subject: "spoofed",
        tokenIdentifier: "spoofed",
      },
      "https://i.example",
    );
    expect(identity).toEqual({
      tokenIdentifier: "https://i.example|u",
      subject: "u",
      issuer: "https://i.example",
      emailVerified: true,
      updatedAt: "1700000000",
      address: '{"street_address":"1 Main St"}',
      "https://example.com/roles": ["admin"],
    });
  });
});

describe("TokenVerifier", () => {
  async function setup() {
    const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
    const jwk: JWK = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" };
    const jwks = `data:application/json;base64,${Buffer.from(JSON.stringify({ keys: [jwk] })).toString("base64")}`;
    const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "ES256", kid: "k1", ...header })
        .sign(privateKey);
    const now = Math.floor(Date.now() / 1000);
    return { jwks, sign, now };
  }

  it("verifies against a data: key set and picks the first provider that accepts the token", async () => {
    const { jwks, sign, now } = await setup();
    const providers: AuthProvider[] = [
      { type: "customJwt", issuer: "https://i", jwks, algorithm: "ES256", applicationID: "one" },
      { type: "customJwt", issuer: "https://i/", jwks, algorithm: "ES256", applicationID: "two" },
    ];
    const verifier = new TokenVerifier();
    const t = await sign({ iss: "https://i", sub: "s", aud: "two", exp: now + 60 });
    const v = await verifier.verify(t, providers);
    expect(v.identity.tokenIdentifier).toBe("https://i|s");
    expect(v.expiresAtMs).toBe((now + 60 + 5) * 1000);

    const wrong = await sign({ iss: "https://i", sub: "s", aud: "three", exp: now + 60 });
    await expect(verifier.verify(wrong, providers)).rejects.toThrow(
      /custom JWT provider https:\/\/i \(ES256, applicationID "one"\): the token's audience .*; custom JWT provider https:\/\/i\/ /,
    );
  });

  it("says which check failed", async () => {
    const { jwks, sign, now } = await setup();
    const providers: AuthProvider[] = [
      { type: "customJwt", issuer: "https://i", jwks, algorithm: "ES256", applicationID: null },
    ];
    const verifier = new TokenVerifier();
    const cases: Array<[Promise<string> | string, RegExp]> = [
      ["abc", /Could not decode the token: it is not a signed JWT/],
      [sign({ sub: "s", exp: now + 60 }), /The token has no issuer/],
      [sign({ iss: "https://i", exp: now + 60 }), /the token has no sub claim, which is required/],
      [sign({ iss: "https://i", sub: "s" }), /the token has no exp claim, which is required/],
      [sign({ iss: "https://i", sub: "s", exp: now - 60 }), /Token expired: .* 6\d s ago/],
      [sign({ iss: "https://i", sub: "s", exp: now + 60, nbf: now + 600 }), /not valid yet/],
      [
        sign({ iss: "https://i", sub: "s", exp: now + 60 }, { kid: "other" }),
        /no key of the provider's key set \(the jwks data: URI\) matches/,
      ],
    ];
    for (const [token, message] of cases)
      await expect(verifier.verify(await token, providers)).rejects.toThrow(message);
    // Within the clock tolerance an expired token still passes (expired 2 s before
    // now, not before the start of the test, which a slow machine may have left behind).
    const expired = Math.floor(Date.now() / 1000) - 2;
    await expect(
      verifier.verify(await sign({ iss: "https://i", sub: "s", exp: expired }), providers),
    ).resolves.toBeDefined();
  });

  it("answers any claims a provider's key signed with an identity of strings or a TokenError", async () => {
    const { jwks, sign, now } = await setup();
    const providers: AuthProvider[] = [
      { type: "customJwt", issuer: "https://i", jwks, algorithm: "ES256", applicationID: null },
    ];
    const verifier = new TokenVerifier();
    const odd = fc.constantFrom<unknown>({ toString: 1 }, [], {}, null, "", 0, -1, 1e20, true);
    const claim = fc.oneof(fc.jsonValue(), odd);
    const claims = fc.record(
      {
        sub: fc.oneof(fc.string(), claim),
        exp: fc.oneof(fc.constant(now + 600), fc.constant(now - 600), claim),
        nbf: fc.oneof(fc.constant(now - 600), claim),
        aud: claim,
        email: claim,
        email_verified: claim,
        name: claim,
        custom: claim,
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(claims, async (c) => {
        const token = await sign({ iss: "https://i", ...c });
        let identity: Record<string, unknown>;
        try {
          identity = (await verifier.verify(token, providers)).identity as unknown as Record<
            string,
            unknown
          >;
        } catch (e) {
          expect(e).toBeInstanceOf(TokenError);
          return;
        }
        for (const field of ["subject", "issuer", "tokenIdentifier"])
          expect(typeof identity[field], field).toBe("string");
      }),
      {
        numRuns: 300,
        // Found by this property: a `sub` that is no string became the identity's subject
        // (an object printed into tokenIdentifier threw, a number stayed a number), and an
        // `nbf` that is no time threw a RangeError while the refusal was being worded.
        examples: [
          [{ sub: { toString: 1 }, exp: now + 600 }],
          [{ sub: 7, exp: now + 600 }],
          [{ sub: "s", exp: now + 600, nbf: [false] }],
          [{ sub: "s", exp: now + 600, nbf: 1e20 }],
        ],
      },
    );
  });

  it("reports an OIDC provider whose discovery document cannot be fetched", async () => {
    const { sign, now } = await setup();
    const verifier = new TokenVerifier({ fetchTimeoutMs: 2_000 });
    const t = await sign({ iss: "http://127.0.0.1:1", sub: "s", aud: "a", exp: now + 60 });
    await expect(
      verifier.verify(t, [{ type: "oidc", domain: "http://127.0.0.1:1", applicationID: "a" }]),
    ).rejects.toThrow(
      /could not fetch the OIDC discovery document http:\/\/127.0.0.1:1\/.well-known\/openid-configuration/,
    );
  });
});
