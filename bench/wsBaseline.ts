/**
 * The raw-WebSocket baseline of the sync section, run as its own process
 * (one server core, as Tessera's): echoes every message, and on a message
 * "broadcast:<text>" sends <text> to every connected socket.
 */
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";

const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", (data) => {
    const text = data.toString();
    if (text.startsWith("broadcast:")) {
      const payload = text.slice("broadcast:".length);
      for (const c of wss.clients) c.send(payload);
    } else {
      ws.send(text);
    }
  });
});
wss.on("listening", () => {
  process.stdout.write(`listening ${(wss.address() as AddressInfo).port}\n`);
});
