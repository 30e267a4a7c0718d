import { rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { type FunctionReference, makeFunctionReference } from "convex/server";
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { sleep, waitFor } from "../helpers.js";
import { makeApp, runCli } from "./officialCli.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

const root = join(import.meta.dirname, "../..");
const authConvexDir = join(root, "test/fixtures/auth/convex");
const AUDIENCE = "tessera-tests";

// biome-ignore lint/suspicious/noExplicitAny: identities are checked field by field.
type Identity = Record<string, any> | null;
const whoami = makeFunctionReference<"query", Record<string, never>, Identity>(
  "whoami:get",
) as FunctionReference<"query", "public", Record<string, never>, Identity>;
const subjectOf = makeFunctionReference<"mutation", Record<string, never>, string | null>(
  "whoami:subject",
) as FunctionReference<"mutation", "public", Record<string, never>, string | null>;

// ---------------------------------------------------------------- issuer

interface SigningKey {
  kid: string;
  alg: "RS256" | "ES256";
  privateKey: CryptoKey;
  jwk: JWK;
}

async function signingKey(kid: string, alg: "RS256" | "ES256"): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

/** The identity provider: OIDC discovery and key sets, and a log of what was fetched when. */
class Issuer {
  /** Keys published in the OIDC key set. */
  published: SigningKey[] = [];
  custom: SigningKey[] = [];
  readonly fetches: Array<{ path: string; atMs: number }> = [];
  private http!: Server;
  base = "";

  async start(): Promise<void> {
    this.http = createServer((req, res) => {
      const path = req.url ?? "";
      this.fetches.push({ path, atMs: Date.now() });
      const json = (body: unknown) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (path === "/.well-known/openid-configuration")
        json({ issuer: this.base, jwks_uri: `${this.base}/jwks.json` });
      else if (path === "/jwks.json") json({ keys: this.published.map((k) => k.jwk) });
      else if (path === "/custom/jwks.json") json({ keys: this.custom.map((k) => k.jwk) });
      else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((resolve) => this.http.listen(0, "127.0.0.1", resolve));
    this.base = `http://127.0.0.1:${(this.http.address() as AddressInfo).port}`;
  }

  get customIssuer(): string {
    return `${this.base}/custom`;
  }

  lastFetch(path: string): number {
    return Math.max(0, ...this.fetches.filter((f) => f.path === path).map((f) => f.atMs));
  }

  async close(): Promise<void> {
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }
}

interface TokenOptions {
  key?: SigningKey;
  iss?: string;
  aud?: string | string[] | null;
  sub?: string;
  /** Seconds from now. */
  exp?: number;
  /** Seconds from now (negative: in the past). */
  iat?: number;
  claims?: Record<string, unknown>;
}

let issuer: Issuer;
let oidcKey: SigningKey;
let customKey: SigningKey;

async function token(o: TokenOptions = {}): Promise<string> {
  const key = o.key ?? oidcKey;
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT(o.claims ?? {})
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT" })
    .setIssuer(o.iss ?? issuer.base)
    .setSubject(o.sub ?? "user-1")
    .setIssuedAt(now + (o.iat ?? 0))
    .setExpirationTime(now + (o.exp ?? 3600));
  const aud = o.aud === undefined ? AUDIENCE : o.aud;
  if (aud !== null) jwt.setAudience(aud);
  return jwt.sign(key.privateKey);
}

// ---------------------------------------------------------------- clients

/** The last frames of this test's sockets, printed if it fails. */
let wireLog: string[] = [];
/** Every AuthError any client received. */
// biome-ignore lint/suspicious/noExplicitAny: parsed server messages
let authErrors: any[] = [];

class RecordingWebSocket extends WebSocket {
  constructor(...args: ConstructorParameters<typeof WebSocket>) {
    super(...args);
    this.addEventListener("message", (e) => {
      const text = String(e.data);
      wireLog.push(`<- ${text.slice(0, 300)}`);
      if (text.includes('"AuthError"')) authErrors.push(JSON.parse(text));
    });
    this.addEventListener("close", (e) => wireLog.push(`closed ${e.code} ${e.reason}`));
  }

  override send(data: string, ...rest: unknown[]): void {
    wireLog.push(`-> ${String(data).slice(0, 300)}`);
    (super.send as (...a: unknown[]) => void)(data, ...rest);
  }
}

let server: ServerProcess;
const open: ConvexClient[] = [];

function newClient(): ConvexClient {
  const c = new ConvexClient(server.url, {
    webSocketConstructor: RecordingWebSocket as unknown as typeof globalThis.WebSocket,
    logger: false,
    unsavedChangesWarning: false,
  });
  open.push(c);
  return c;
}

/** A token fetcher that hands out `tokens` in turn (the last one again when they run out). */
function fetcher(tokens: Array<string | Promise<string>>) {
  const calls: boolean[] = [];
  const fetchToken = async ({ forceRefreshToken }: { forceRefreshToken: boolean }) => {
    calls.push(forceRefreshToken);
    return await tokens[Math.min(calls.length - 1, tokens.length - 1)]!;
  };
  return { fetchToken, calls };
}

function watch(client: ConvexClient): Identity[] {
  const seen: Identity[] = [];
  client.onUpdate(whoami, {}, (v) => {
    seen.push(v);
  });
  return seen;
}

async function setEnv(s: ServerProcess, values: Record<string, string>): Promise<void> {
  const res = await fetch(`${s.url}/api/update_environment_variables`, {
    method: "POST",
    headers: { authorization: `Convex ${s.adminKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      changes: Object.entries(values).map(([name, value]) => ({ name, value })),
    }),
  });
  expect(res.status).toBe(200);
}

function issuerEnv(): Record<string, string> {
  return {
    TEST_OIDC_DOMAIN: issuer.base,
    TEST_CUSTOM_ISSUER: issuer.customIssuer,
    TEST_CUSTOM_JWKS: `${issuer.base}/custom/jwks.json`,
  };
}

beforeAll(async () => {
  issuer = new Issuer();
  await issuer.start();
  oidcKey = await signingKey("key-1", "RS256");
  customKey = await signingKey("custom-1", "ES256");
  issuer.published = [oidcKey];
  issuer.custom = [customKey];
  server = await startServer({ convexDir: authConvexDir });
  // auth.config.ts reads these; it is evaluated when the first token arrives.
  await setEnv(server, issuerEnv());
}, 60_000);

afterEach(async (ctx) => {
  if (ctx.task.result?.state === "fail")
    console.error(
      `wire log of "${ctx.task.name}":\n${wireLog.slice(-200).join("\n")}\n--- server output:\n${server.output().slice(-4000)}`,
    );
  wireLog = [];
  authErrors = [];
  await Promise.all(open.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await server?.dispose();
  await issuer?.close();
});

// ---------------------------------------------------------------- tests

describe("ConvexClient.setAuth", () => {
  it("verifies an OIDC token: whoami returns the documented identity fields and custom claims", async () => {
    const claims = {
      name: "Ada Lovelace",
      given_name: "Ada",
      family_name: "Lovelace",
      nickname: "ada",
      preferred_username: "ada.l",
      profile: "https://example.com/ada",
      picture: "https://example.com/ada.png",
      email: "ada@example.com",
      email_verified: true,
      gender: "female",
      birthdate: "1815-12-10",
      zoneinfo: "Europe/London",
      locale: "en-GB",
      phone_number: "+44 20 0000 0000",
      phone_number_verified: false,
      address: "12 St James's Square",
      updated_at: "2024-01-01T00:00:00Z",
      role: "admin",
      org: { id: 7, teams: ["a", "b"] },
    };
    const auth = fetcher([token({ claims }), token({ claims })]);
    const client = newClient();
    const changes: boolean[] = [];
    client.setAuth(auth.fetchToken, (isAuthenticated) => changes.push(isAuthenticated));
    // Sent right after Authenticate: runs as the new identity, not before it is verified.
    expect(await client.mutation(subjectOf, {})).toBe("user-1");
    const seen = watch(client);
    await waitFor("the identity", () => seen.some((v) => v !== null));
    // The first result is already the user's (no anonymous result shown first).
    expect(seen[0]).not.toBeNull();
    expect(seen.at(-1)).toEqual({
      tokenIdentifier: `${issuer.base}|user-1`,
      subject: "user-1",
      issuer: issuer.base,
      name: "Ada Lovelace",
      givenName: "Ada",
      familyName: "Lovelace",
      nickname: "ada",
      preferredUsername: "ada.l",
      profileUrl: "https://example.com/ada",
      pictureUrl: "https://example.com/ada.png",
      email: "ada@example.com",
      emailVerified: true,
      gender: "female",
      birthday: "1815-12-10",
      timezone: "Europe/London",
      language: "en-GB",
      phoneNumber: "+44 20 0000 0000",
      phoneNumberVerified: false,
      address: "12 St James's Square",
      updatedAt: "2024-01-01T00:00:00Z",
      role: "admin",
      org: { id: 7, teams: ["a", "b"] },
    });
    await waitFor("onAuthChange(true)", () => changes.includes(true));
    expect(changes).not.toContain(false);
    expect(authErrors).toEqual([]);
  });

  it("verifies a custom JWT (ES256, no applicationID: any audience)", async () => {
    const client = newClient();
    const t = await token({ key: customKey, iss: issuer.customIssuer, aud: null, sub: "c-1" });
    client.setAuth(fetcher([t]).fetchToken);
    const seen = watch(client);
    await waitFor("the identity", () => seen.some((v) => v !== null));
    expect(seen.at(-1)).toEqual({
      tokenIdentifier: `${issuer.customIssuer}|c-1`,
      subject: "c-1",
      issuer: issuer.customIssuer,
    });
  });

  const refused: Array<[string, () => Promise<string>, RegExp]> = [
    [
      "a wrong audience",
      () => token({ aud: "someone-else" }),
      /audience \(aud "someone-else"\) does not include the provider's applicationID "tessera-tests"/,
    ],
    [
      "an unknown issuer",
      () => token({ iss: "https://issuer.invalid" }),
      /No auth provider found matching the given token: its issuer \(iss\) is "https:\/\/issuer.invalid"/,
    ],
    [
      "a bad signature",
      async () => {
        // Signed by another key under the published key id.
        const impostor = await signingKey(oidcKey.kid, "RS256");
        return token({ key: impostor });
      },
      /signature does not verify/,
    ],
    ["an expired token", () => token({ iat: -7200, exp: -3600 }), /Token expired/],
    [
      "a custom JWT with the wrong algorithm",
      async () =>
        token({ key: await signingKey(customKey.kid, "RS256"), iss: issuer.customIssuer }),
      /algorithm the provider does not accept \(accepted: ES256\)/,
    ],
  ];
  for (const [what, bad, message] of refused) {
    it(`refuses ${what} with an AuthError; the client fetches a fresh token and recovers`, async () => {
      const auth = fetcher([bad(), token({ sub: "fresh" })]);
      const client = newClient();
      const changes: boolean[] = [];
      client.setAuth(auth.fetchToken, (ok) => changes.push(ok));
      const seen = watch(client);
      await waitFor("the fresh identity", () => seen.some((v) => v?.subject === "fresh"));
      expect(authErrors.length).toBe(1);
      expect(authErrors[0]).toMatchObject({ authUpdateAttempted: true, baseVersion: 0 });
      expect(authErrors[0].error).toMatch(message);
      // The second fetch was told to refresh.
      expect(auth.calls).toEqual([false, true]);
      await waitFor("onAuthChange(true)", () => changes.includes(true));
      expect(changes).not.toContain(false);
      // Nothing was ever shown as another identity.
      expect(seen.every((v) => v === null || v.subject === "fresh")).toBe(true);
    });
  }

  it("tells the client when its token expires mid-session; it refetches and carries on", async () => {
    // The client schedules its own refresh from exp − iat, so a token issued
    // an hour ago that expires in a few seconds is not refreshed by the client:
    // the server's AuthError is what makes it fetch a new one. The server
    // accepts it for 5 s more (clock tolerance): over 10 s in all, for the
    // client to connect and be seen as user-1 on a slow machine.
    const dying = await token({ iat: -3600, exp: 7 });
    const auth = fetcher([dying, dying, token({ sub: "renewed" })]);
    const client = newClient();
    const changes: boolean[] = [];
    client.setAuth(auth.fetchToken, (ok) => changes.push(ok));
    const seen = watch(client);
    await waitFor("the first identity", () => seen.some((v) => v?.subject === "user-1"));
    await waitFor("the renewed identity", () => seen.at(-1)?.subject === "renewed", 30_000);
    expect(authErrors.map((e) => [e.error, e.authUpdateAttempted])).toEqual([
      ["Token expired", false],
    ]);
    expect(auth.calls.at(-1)).toBe(true);
    expect(changes).not.toContain(false);
    // A mutation now runs as the renewed identity.
    expect(await client.mutation(subjectOf, {})).toBe("renewed");
  }, 40_000);

  it("never shows one user's results to another, even for one user with different claims", async () => {
    const users = [
      { sub: "alice", claims: { role: "reader" } },
      { sub: "bob", claims: { role: "reader" } },
      { sub: "alice", claims: { role: "writer" } },
    ];
    const clients = users.map(() => newClient());
    const seen = await Promise.all(
      clients.map(async (c, i) => {
        c.setAuth(fetcher([token(users[i]), token(users[i])]).fetchToken);
        return watch(c);
      }),
    );
    await waitFor("every identity", () => seen.every((s) => s.some((v) => v !== null)));
    // And over HTTP, concurrently.
    const http = await Promise.all(
      users.map(async (u) => {
        const h = new ConvexHttpClient(server.url, { logger: false });
        h.setAuth(await token(u));
        return h.query(whoami, {});
      }),
    );
    for (let i = 0; i < users.length; i++) {
      for (const v of seen[i]!) {
        if (v === null) continue;
        expect(v.subject).toBe(users[i]!.sub);
        expect(v.role).toBe(users[i]!.claims.role);
      }
      expect(http[i]?.subject).toBe(users[i]!.sub);
      expect(http[i]?.role).toBe(users[i]!.claims.role);
    }
  });
});

describe("ConvexHttpClient.setAuth (Authorization: Bearer)", () => {
  it("runs queries and mutations as the token's identity, and answers 401 to a bad token", async () => {
    const http = new ConvexHttpClient(server.url, { logger: false });
    http.setAuth(await token({ sub: "http-user" }));
    expect((await http.query(whoami, {}))?.subject).toBe("http-user");
    expect(await http.mutation(subjectOf, {})).toBe("http-user");

    http.setAuth(await token({ aud: "nope" }));
    await expect(http.query(whoami, {})).rejects.toThrow(
      /does not include the provider's applicationID/,
    );
    const res = await fetch(`${server.url}/api/query`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer not-a-jwt" },
      body: JSON.stringify({ path: "whoami:get", args: {}, format: "json" }),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      code: "Unauthenticated",
      message: expect.stringMatching(/not a signed JWT/),
    });
  });

  it("fetches the key set again for a key id it does not know (key rotation)", async () => {
    const http = new ConvexHttpClient(server.url, { logger: false });
    http.setAuth(await token());
    expect((await http.query(whoami, {}))?.subject).toBe("user-1");
    const fetched = issuer.fetches.filter((f) => f.path === "/jwks.json").length;

    const rotated = await signingKey("key-2", "RS256");
    // Made now: generating it after the cooldown could take long enough on a slow machine
    // for the next cooldown to pass too.
    const unknown = await signingKey("key-unknown", "RS256");
    issuer.published = [oidcKey, rotated];
    // A key set fetched less than 5 s ago is not fetched again for an unknown key. The server
    // counts from when its fetch ended, a little after the issuer saw the request, so the
    // rotated token is tried until it verifies: refused, without a fetch, until the cooldown
    // has passed on the server's side, then accepted after one fetch.
    await sleep(Math.max(0, issuer.lastFetch("/jwks.json") + 5_000 - Date.now()));
    http.setAuth(await token({ key: rotated, sub: "rotated" }));
    const deadline = Date.now() + 20_000;
    let identity: Identity = null;
    for (;;) {
      try {
        identity = await http.query(whoami, {});
        break;
      } catch (e) {
        expect((e as Error).message).toMatch(/no key of the provider's key set .* matches/);
        if (Date.now() > deadline) throw e;
        await sleep(100);
      }
    }
    expect(identity?.subject).toBe("rotated");
    const jwksFetches = () => issuer.fetches.filter((f) => f.path === "/jwks.json");
    expect(jwksFetches().length).toBe(fetched + 1);
    const rotatedFetchAt = jwksFetches().at(-1)!.atMs;

    // A key id that is in no key set: refused, and not fetched again within the cooldown
    // (a fetch 5 s or more after the last one is allowed: a slow machine may get that late).
    http.setAuth(await token({ key: unknown }));
    await expect(http.query(whoami, {})).rejects.toThrow(
      /no key of the provider's key set .* matches the token's key id/,
    );
    const early = jwksFetches()
      .slice(fetched + 1)
      .filter((f) => f.atMs - rotatedFetchAt < 5_000);
    expect(early).toEqual([]);
    // The old key still verifies.
    http.setAuth(await token());
    expect((await http.query(whoami, {}))?.subject).toBe("user-1");
  }, 40_000);
});

// ---------------------------------------------------------------- push

const cli = (app: string, s: ServerProcess, args: string[]) => runCli(app, s, args);

describe("pushing auth.config.ts with the official CLI", () => {
  let pushed: ServerProcess | undefined;
  let app = "";

  afterAll(async () => {
    await pushed?.dispose();
    if (app !== "") rmSync(app, { recursive: true, force: true });
  });

  it("reports a missing environment variable, then serves the pushed providers", async () => {
    app = makeApp(authConvexDir, "auth-app");
    pushed = await startServer({ convexDir: null });

    const missing = await cli(app, pushed, ["deploy"]);
    expect(missing.code).not.toBe(0);
    expect(missing.out).toMatch(
      /Environment variable TEST_OIDC_DOMAIN is used in auth config file but its value was not set/,
    );

    await setEnv(pushed, issuerEnv());
    const ok = await cli(app, pushed, ["deploy"]);
    expect(ok.out).toContain("Deployed Convex functions");
    expect(ok.code).toBe(0);

    const http = new ConvexHttpClient(pushed.url, { logger: false });
    http.setAuth(await token({ sub: "pushed" }));
    expect((await http.query(whoami, {}))?.subject).toBe("pushed");
  }, 120_000);
});
