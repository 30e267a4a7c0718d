/**
 * The realtime stack people write by hand, run as its own process for the
 * fan-out comparison: PostgreSQL `LISTEN items_changed` (a trigger on `items`
 * notifies on every committed change) and a small `ws` server. A client sends
 * `{"type":"subscribe"}` and gets the store's items; on each notification the
 * server re-runs that query once and pushes the result to every subscriber
 * (notifications arriving during a re-run fold into one more re-run).
 *
 * Usage: pgFanoutServer.ts '<pg connection config JSON>'; prints "listening <port>".
 */
import type { AddressInfo } from "node:net";
import pg from "pg";
import { type WebSocket, WebSocketServer } from "ws";

const config = JSON.parse(process.argv[2] ?? "{}") as pg.ClientConfig;
const listener = new pg.Client(config);
const db = new pg.Client(config);
await listener.connect();
await db.connect();
await listener.query("LISTEN items_changed");

async function items(): Promise<string> {
  const r = await db.query({
    name: "items",
    text: "SELECT id, name, price, remaining FROM items ORDER BY name",
  });
  return JSON.stringify({ type: "items", items: r.rows });
}

const subscribers = new Set<WebSocket>();
const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", (data) => {
    let m: { type?: unknown };
    try {
      m = JSON.parse(data.toString());
    } catch {
      ws.close(1003, "not JSON");
      return;
    }
    if (m.type !== "subscribe") return;
    subscribers.add(ws);
    void items().then((payload) => ws.send(payload));
  });
  ws.on("close", () => subscribers.delete(ws));
});

let running = false;
let again = false;
async function push() {
  running = true;
  do {
    again = false;
    const payload = await items();
    for (const ws of subscribers) ws.send(payload);
  } while (again);
  running = false;
}
listener.on("notification", () => {
  if (running) again = true;
  else void push();
});

wss.on("listening", () => {
  process.stdout.write(`listening ${(wss.address() as AddressInfo).port}\n`);
});
