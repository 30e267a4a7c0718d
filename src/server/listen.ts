/** Starts an HTTP server listening; resolves with its URL (`http://host:port`). */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

export async function listen(http: Server, port: number, host = "127.0.0.1"): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(port, host, () => {
      http.off("error", reject);
      resolve();
    });
  });
  const address = http.address() as AddressInfo;
  const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return `http://${shown}:${address.port}`;
}
