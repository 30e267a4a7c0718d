/**
 * A 1 GiB file through a real `tessera serve` process: uploaded through an
 * upload URL and downloaded from its `getUrl` URL (and a range in its
 * middle), both streamed, while the server's resident memory is sampled from
 * /proc: it must stay within 200 MiB of what it was before. The test
 * generates the bytes as it sends them and hashes what it receives; neither
 * side holds the file.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServerProcess, startServer } from "./serverProcess.js";

// biome-ignore lint/suspicious/noExplicitAny: the fixture app is addressed untyped
const api = anyApi as any;

const MiB = 1024 * 1024;
const CHUNK = MiB;
const CHUNKS = 1024; // 1 GiB
const MAX_GROWTH = 200 * MiB;

let server: ServerProcess;

beforeAll(async () => {
  server = await startServer();
}, 60_000);

afterAll(async () => {
  await server?.dispose();
});

/** The server process itself (bin/tessera.js is a launcher that runs it as its child). */
function serverPid(): number {
  const children = readFileSync(`/proc/${server.pid}/task/${server.pid}/children`, "utf8").trim();
  const pid = Number(children.split(/\s+/)[0]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error("the server process was not found");
  return pid;
}

function residentBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m![1]) * 1024;
}

/** Samples a process's resident memory every 50 ms until stopped; the peak. */
function sampleMemory(pid: number): { stop(): number } {
  let peak = residentBytes(pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, residentBytes(pid));
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, residentBytes(pid));
    },
  };
}

/** Chunk `i` of the file: a random block with the chunk's number in its first bytes. */
const block = randomBytes(CHUNK);
function chunk(i: number): Buffer {
  const b = Buffer.from(block);
  b.writeUInt32BE(i, 0);
  return b;
}

/** POSTs the file chunk by chunk, respecting backpressure; the response body. */
function upload(url: string, hash: ReturnType<typeof createHash>): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: "POST",
      headers: { "Content-Type": "video/mp4", "Content-Length": CHUNK * CHUNKS },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`${res.statusCode} ${body}`)),
      );
    });
    let i = 0;
    const write = () => {
      while (i < CHUNKS) {
        const c = chunk(i++);
        hash.update(c);
        if (!req.write(c)) {
          req.once("drain", write);
          return;
        }
      }
      req.end();
    };
    write();
  });
}

/** GETs a URL and hashes the body as it arrives; status, headers, size and hash. */
function download(
  url: string,
  headers: Record<string, string> = {},
): Promise<{
  status: number;
  type: string | undefined;
  size: number;
  sha256: string;
  first: Buffer;
}> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      const hash = createHash("sha256");
      let size = 0;
      let first = Buffer.alloc(0);
      res.on("data", (d: Buffer) => {
        if (first.length < 16) first = Buffer.concat([first, d]).subarray(0, 16);
        hash.update(d);
        size += d.length;
      });
      res.on("end", () =>
        resolve({
          status: res.statusCode!,
          type: res.headers["content-type"],
          size,
          sha256: hash.digest("hex"),
          first,
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("a 1 GiB file", () => {
  it("is uploaded and downloaded streamed, with bounded server memory", async () => {
    const http = new ConvexHttpClient(server.url, { logger: false });
    const pid = serverPid();
    // Warm up (first upload and download paths) before taking the baseline.
    const warmUrl = (await http.mutation(api.storage.generateUploadUrl, {})) as string;
    const warm = await fetch(warmUrl, { method: "POST", body: randomBytes(MiB) });
    const { storageId: warmId } = (await warm.json()) as { storageId: string };
    await download((await http.query(api.storage.url, { id: warmId })) as string);
    const baseline = residentBytes(pid);

    const uploadUrl = (await http.mutation(api.storage.generateUploadUrl, {})) as string;
    const sent = createHash("sha256");
    const uploadMemory = sampleMemory(pid);
    const started = Date.now();
    const { storageId } = JSON.parse(await upload(uploadUrl, sent)) as { storageId: string };
    const uploadMs = Date.now() - started;
    const uploadPeak = uploadMemory.stop();
    const sha256 = sent.digest("hex");

    expect(await http.query(api.storage.doc, { id: storageId })).toMatchObject({
      sha256,
      size: CHUNK * CHUNKS,
      contentType: "video/mp4",
    });

    const url = (await http.query(api.storage.url, { id: storageId })) as string;
    const downloadMemory = sampleMemory(pid);
    const downloadStarted = Date.now();
    const got = await download(url);
    const downloadMs = Date.now() - downloadStarted;
    const downloadPeak = downloadMemory.stop();
    expect(got).toMatchObject({ status: 200, type: "video/mp4", size: CHUNK * CHUNKS, sha256 });

    // A range in the middle: chunk 512 starts with its number.
    const middle = await download(url, { Range: `bytes=${512 * CHUNK}-${512 * CHUNK + 15}` });
    expect(middle.status).toBe(206);
    expect(middle.first.equals(chunk(512).subarray(0, 16))).toBe(true);

    const growth = Math.max(uploadPeak, downloadPeak) - baseline;
    console.log(
      `1 GiB: upload ${uploadMs} ms, download ${downloadMs} ms; server RSS ${(baseline / MiB).toFixed(0)} MiB before, peak +${((uploadPeak - baseline) / MiB).toFixed(0)} MiB uploading, +${((downloadPeak - baseline) / MiB).toFixed(0)} MiB downloading`,
    );
    expect(growth).toBeLessThan(MAX_GROWTH);
  }, 120_000);
});
