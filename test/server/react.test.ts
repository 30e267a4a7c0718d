// @vitest-environment jsdom
/**
 * The official React bindings (`ConvexReactClient`, `ConvexProvider`,
 * `useQuery`, `useMutation`) against a real `tessera serve` process: a
 * component re-renders when another client changes what its query read, and
 * an optimistic update shows at once and settles to the server's result.
 */
import { act, cleanup, render, waitFor } from "@testing-library/react";
import { ConvexHttpClient } from "convex/browser";
import { ConvexProvider, ConvexReactClient, useMutation, useQuery } from "convex/react";
import { createElement, useEffect } from "react";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { api } from "./api.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

let server: ServerProcess;
let client: ConvexReactClient | undefined;

beforeAll(async () => {
  server = await startServer();
});

afterEach(async () => {
  cleanup();
  await client?.close();
  client = undefined;
});

afterAll(async () => {
  await server?.dispose();
});

type WebSocketCtor = NonNullable<
  ConstructorParameters<typeof ConvexReactClient>[1]
>["webSocketConstructor"];

function newReactClient(): ConvexReactClient {
  client = new ConvexReactClient(server.url, {
    webSocketConstructor: WebSocket as unknown as WebSocketCtor,
    unsavedChangesWarning: false,
    logger: false,
  });
  return client;
}

/** What the counter shows (the project's TS config has no DOM types: read it structurally). */
function shownText(view: { getByTestId(id: string): unknown }): string | null {
  return (view.getByTestId("value") as { textContent: string | null }).textContent;
}

function Counter({ name, renders }: { name: string; renders: (number | undefined)[] }) {
  const value = useQuery(api.counters.get, { name });
  renders.push(value);
  return createElement(
    "p",
    { "data-testid": "value" },
    value === undefined ? "loading" : `count: ${value}`,
  );
}

describe("React hooks", () => {
  it("a component using useQuery re-renders with new data", async () => {
    const c = newReactClient();
    const renders: (number | undefined)[] = [];
    const view = render(
      createElement(
        ConvexProvider,
        { client: c },
        createElement(Counter, { name: "react", renders }),
      ),
    );
    expect(shownText(view)).toBe("loading");
    await waitFor(() => expect(shownText(view)).toBe("count: 0"), {
      timeout: 20_000,
    });
    // Another client writes; the component shows it without doing anything.
    const http = new ConvexHttpClient(server.url, { logger: false });
    await http.mutation(api.counters.increment, { name: "react", by: 4 });
    await waitFor(() => expect(shownText(view)).toBe("count: 4"), {
      timeout: 20_000,
    });
    await http.mutation(api.counters.increment, { name: "react" });
    await waitFor(() => expect(shownText(view)).toBe("count: 5"), {
      timeout: 20_000,
    });
    expect(renders.filter((v) => v !== undefined)).toEqual(expect.arrayContaining([0, 4, 5]));
  });

  it("an optimistic update from useMutation shows at once and settles to the server's result", async () => {
    const c = newReactClient();
    const renders: (number | undefined)[] = [];
    let increment: ((args: { name: string; by?: number }) => Promise<number>) | undefined;
    function Incrementer() {
      const mutate = useMutation(api.counters.increment).withOptimisticUpdate((store, args) => {
        const current = store.getQuery(api.counters.get, { name: args.name });
        if (current !== undefined)
          store.setQuery(api.counters.get, { name: args.name }, current + 1000);
      });
      useEffect(() => {
        increment = mutate;
      }, [mutate]);
      return null;
    }
    const view = render(
      createElement(
        ConvexProvider,
        { client: c },
        createElement(Counter, { name: "react-opt", renders }),
        createElement(Incrementer),
      ),
    );
    await waitFor(() => expect(shownText(view)).toBe("count: 0"), {
      timeout: 20_000,
    });
    let done: Promise<number> | undefined;
    act(() => {
      done = increment!({ name: "react-opt", by: 7 });
    });
    // Rendered before the server could answer.
    expect(shownText(view)).toBe("count: 1000");
    let result: number | undefined;
    await act(async () => {
      result = await done;
    });
    expect(result).toBe(7);
    await waitFor(() => expect(shownText(view)).toBe("count: 7"), {
      timeout: 20_000,
    });
    const shown = renders.filter((v) => v !== undefined);
    expect(shown[0]).toBe(0);
    expect(shown).toContain(1000);
    expect(shown.at(-1)).toBe(7);
    // Nothing but the optimistic value (possibly on top of the new server value) in between.
    expect(shown.slice(1, -1).every((v) => v === 1000 || v === 1007)).toBe(true);
  });
});
