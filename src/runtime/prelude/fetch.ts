/**
 * `Headers`, `Request`, `Response` and `FormData` (Fetch and XHR standards).
 * A body is either bytes in memory (from a string, a BufferSource, a Blob,
 * URLSearchParams, FormData) or a ReadableStream (given as the body, or the
 * streamed request of an HTTP action). `body` returns the stream, making one
 * over the bytes on first read; `text()`, `json()`, `arrayBuffer()`,
 * `bytes()`, `blob()` and `formData()` read the bytes directly, or the
 * stream to its end. Streams come from streams.ts, evaluated only when a
 * body needs one.
 */

import { base64ToBytes, bytesToBase64 } from "./base64.js";
import { type Blob, blobBytes, File, isBlob, makeBlob, makeFile } from "./blob.js";
import { utf8DecodeBody, utf8DecodeLossy, utf8Encode } from "./encoding.js";
import { now, rng } from "./env.js";
import { AbortController, AbortSignal } from "./events.js";
import { guardInternals, guardReach, guardWrite, weakMapGet } from "./guard.js";
import { type HttpMessage, host, httpBridge, responseUrl } from "./timers.js";
import {
  concatBytes,
  inspectCustom,
  isReadableStream,
  loadedGlobal,
  preludeGlobal,
  setInterfaceName,
  streams,
  toArrayBuffer,
  toDOMString,
  toUSVString,
  viewBytes,
} from "./util.js";

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

type Guard = "none" | "immutable";

interface HeadersData {
  /** Header list in insertion order: [lowercased name, value]. */
  list: [string, string][];
  guard: Guard;
}

const headersData = new WeakMap<object, HeadersData>();

function hdata(self: unknown): HeadersData {
  const d = typeof self === "object" && self !== null ? headersData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function normalizeValue(value: string): string {
  return value.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
}

function validateName(name: string, where: string): void {
  if (!TOKEN.test(name)) throw new TypeError(`${where}: "${name}" is an invalid header name.`);
}

function validateValue(value: string, where: string): void {
  if (/[\0\r\n]/.test(value)) {
    throw new TypeError(`${where}: "${value}" is an invalid header value.`);
  }
}

function checkMutable(d: HeadersData): void {
  if (d.guard === "immutable") throw new TypeError("immutable");
}

function appendHeader(d: HeadersData, name: unknown, value: unknown, where: string): void {
  const n = toDOMString(name);
  const v = normalizeValue(toDOMString(value));
  validateName(n, where);
  validateValue(v, where);
  checkMutable(d);
  d.list.push([n.toLowerCase(), v]);
}

function fillHeaders(d: HeadersData, init: unknown): void {
  if (init === undefined || init === null) {
    if (init === null) {
      throw new TypeError(
        "Failed to construct 'Headers': The provided value is not of type '(record<ByteString, ByteString> or sequence<sequence<ByteString>>)'.",
      );
    }
    return;
  }
  if (typeof init !== "object" && typeof init !== "function") {
    throw new TypeError(
      "Failed to construct 'Headers': The provided value is not of type '(record<ByteString, ByteString> or sequence<sequence<ByteString>>)'.",
    );
  }
  if (init instanceof Headers) {
    for (const [n, v] of hdata(init).list) d.list.push([n, v]);
    return;
  }
  const iterator = (init as { [Symbol.iterator]?: unknown })[Symbol.iterator];
  if (typeof iterator === "function") {
    for (const pair of init as Iterable<unknown>) {
      if (typeof pair !== "object" || pair === null || !(Symbol.iterator in pair)) {
        throw new TypeError(
          "Headers constructor: expected name/value pair to be an iterable of length 2.",
        );
      }
      const items = [...(pair as Iterable<unknown>)];
      if (items.length !== 2) {
        throw new TypeError(
          `Headers constructor: expected name/value pair to be length 2, found ${items.length}.`,
        );
      }
      appendHeader(d, items[0], items[1], "Headers.append");
    }
    return;
  }
  for (const key of Reflect.ownKeys(init)) {
    const desc = Reflect.getOwnPropertyDescriptor(init, key);
    if (desc === undefined || !desc.enumerable) continue;
    if (typeof key === "symbol") {
      throw new TypeError("Cannot convert a Symbol value to a string");
    }
    appendHeader(d, key, (init as Record<string, unknown>)[key], "Headers.append");
  }
}

function getHeader(d: HeadersData, name: string): string | null {
  let out: string | null = null;
  for (const [n, v] of d.list) {
    if (n === name) out = out === null ? v : `${out}, ${v}`;
  }
  return out;
}

/** The sorted-and-combined view of the header list that iteration uses. */
function sortedHeaders(d: HeadersData): [string, string][] {
  const names = [...new Set(d.list.map(([n]) => n))].sort();
  const out: [string, string][] = [];
  for (const name of names) {
    if (name === "set-cookie") {
      for (const [n, v] of d.list) if (n === "set-cookie") out.push([n, v]);
    } else {
      out.push([name, getHeader(d, name)!]);
    }
  }
  return out;
}

export class Headers {
  constructor(init?: unknown) {
    const d: HeadersData = { list: [], guard: "none" };
    headersData.set(this, d);
    fillHeaders(d, init);
  }

  append(name: unknown, value: unknown): void {
    const d = hdata(this);
    guardWrite(this, "a Headers");
    appendHeader(d, name, value, "Headers.append");
  }

  delete(name: unknown): void {
    const d = hdata(this);
    guardWrite(this, "a Headers");
    const n = toDOMString(name);
    validateName(n, "Headers.delete");
    checkMutable(d);
    const lower = n.toLowerCase();
    d.list = d.list.filter(([k]) => k !== lower);
  }

  get(name: unknown): string | null {
    const d = hdata(this);
    const n = toDOMString(name);
    validateName(n, "Headers.get");
    return getHeader(d, n.toLowerCase());
  }

  getSetCookie(): string[] {
    return hdata(this)
      .list.filter(([n]) => n === "set-cookie")
      .map(([, v]) => v);
  }

  has(name: unknown): boolean {
    const d = hdata(this);
    const n = toDOMString(name);
    validateName(n, "Headers.has");
    const lower = n.toLowerCase();
    return d.list.some(([k]) => k === lower);
  }

  set(name: unknown, value: unknown): void {
    const d = hdata(this);
    guardWrite(this, "a Headers");
    const n = toDOMString(name);
    const v = normalizeValue(toDOMString(value));
    validateName(n, "Headers.set");
    validateValue(v, "Headers.set");
    checkMutable(d);
    const lower = n.toLowerCase();
    const index = d.list.findIndex(([k]) => k === lower);
    if (index === -1) {
      d.list.push([lower, v]);
    } else {
      d.list[index] = [lower, v];
      d.list = d.list.filter(([k], i) => k !== lower || i <= index);
    }
  }

  forEach(
    callback: (value: string, key: string, parent: Headers) => void,
    thisArg?: unknown,
  ): void {
    const d = hdata(this);
    if (typeof callback !== "function") {
      throw new TypeError(
        "Failed to execute 'forEach' on 'Headers': parameter 1 is not of type 'Function'.",
      );
    }
    for (const [k, v] of sortedHeaders(d)) callback.call(thisArg, v, k, this);
  }

  *entries(): IterableIterator<[string, string]> {
    yield* sortedHeaders(hdata(this));
  }

  *keys(): IterableIterator<string> {
    for (const [k] of sortedHeaders(hdata(this))) yield k;
  }

  *values(): IterableIterator<string> {
    for (const [, v] of sortedHeaders(hdata(this))) yield v;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  [inspectCustom](depth: number, options: unknown, inspect: (v: unknown, o: unknown) => string) {
    const obj: Record<string, string> = {};
    for (const [k, v] of sortedHeaders(hdata(this))) obj[k] = v;
    return `Headers ${inspect(obj, { ...(options as object), depth })}`;
  }
}
setInterfaceName(Headers, "Headers");

function headersWithGuard(guard: Guard, list: [string, string][] = []): Headers {
  const h = new Headers();
  const d = hdata(h);
  d.list = list;
  d.guard = guard;
  return h;
}

// ---------------------------------------------------------------------------
// FormData
// ---------------------------------------------------------------------------

type FormValue = string | File;

const formEntries = new WeakMap<object, [string, FormValue][]>();

function fentries(self: unknown): [string, FormValue][] {
  const e = typeof self === "object" && self !== null ? formEntries.get(self) : undefined;
  if (e === undefined) throw new TypeError("Illegal invocation");
  return e;
}

function toFormValue(value: unknown, filename: unknown, argCount: number): FormValue {
  if (isBlob(value)) {
    const name =
      filename !== undefined ? toUSVString(filename) : value instanceof File ? value.name : "blob";
    if (value instanceof File && filename === undefined) return value;
    return makeFile(
      blobBytes(value),
      name,
      value.type,
      value instanceof File ? value.lastModified : now(),
    );
  }
  if (argCount > 2) {
    throw new TypeError(
      "Failed to execute 'append' on 'FormData': parameter 2 is not of type 'Blob'.",
    );
  }
  return toUSVString(value);
}

export class FormData {
  constructor(form?: unknown) {
    if (form !== undefined) {
      throw new TypeError(
        "Failed to construct 'FormData': parameter 1 is not of type 'HTMLFormElement'.",
      );
    }
    formEntries.set(this, []);
  }

  append(name: unknown, value: unknown, filename?: unknown): void {
    const e = fentries(this);
    guardWrite(this, "a FormData");
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    e.push([toUSVString(name), toFormValue(value, filename, arguments.length)]);
  }

  delete(name: unknown): void {
    const e = fentries(this);
    guardWrite(this, "a FormData");
    const n = toUSVString(name);
    formEntries.set(
      this,
      e.filter(([k]) => k !== n),
    );
  }

  get(name: unknown): FormValue | null {
    const n = toUSVString(name);
    return guardReach(this, fentries(this).find(([k]) => k === n)?.[1] ?? null);
  }

  getAll(name: unknown): FormValue[] {
    const n = toUSVString(name);
    return fentries(this)
      .filter(([k]) => k === n)
      .map(([, v]) => guardReach(this, v));
  }

  has(name: unknown): boolean {
    const n = toUSVString(name);
    return fentries(this).some(([k]) => k === n);
  }

  set(name: unknown, value: unknown, filename?: unknown): void {
    const e = fentries(this);
    guardWrite(this, "a FormData");
    const n = toUSVString(name);
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    const entry: [string, FormValue] = [n, toFormValue(value, filename, arguments.length)];
    const index = e.findIndex(([k]) => k === n);
    if (index === -1) {
      e.push(entry);
    } else {
      e[index] = entry;
      formEntries.set(
        this,
        e.filter(([k], i) => k !== n || i <= index),
      );
    }
  }

  forEach(callback: (value: FormValue, key: string, parent: FormData) => void, thisArg?: unknown) {
    for (const [k, v] of fentries(this).slice())
      callback.call(thisArg, guardReach(this, v), k, this);
  }

  *entries(): IterableIterator<[string, FormValue]> {
    for (let i = 0; i < fentries(this).length; i++) {
      const entry = fentries(this)[i]!;
      yield [entry[0], guardReach(this, entry[1])];
    }
  }

  *keys(): IterableIterator<string> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): IterableIterator<FormValue> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[string, FormValue]> {
    return this.entries();
  }
}
setInterfaceName(FormData, "FormData");
guardInternals(FormData.prototype, (o) => {
  const entries = weakMapGet(formEntries, o);
  const out: unknown[] = [];
  if (entries !== undefined) for (let i = 0; i < entries.length; i++) out[i] = entries[i]![1];
  return out;
});

function escapeMultipartName(name: string): string {
  return name
    .replace(/\r\n|\r|\n/g, "\r\n")
    .replace(/\n/g, "%0A")
    .replace(/\r/g, "%0D")
    .replace(/"/g, "%22");
}

function encodeMultipart(form: FormData): { bytes: Uint8Array; contentType: string } {
  const random = new Uint8Array(12);
  rng().fill(random);
  let boundary = "----formdata-tessera-";
  for (const b of random) boundary += (b % 10).toString();
  const parts: Uint8Array[] = [];
  for (const [name, value] of fentries(form)) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${escapeMultipartName(name)}"`;
    if (typeof value === "string") {
      head += "\r\n\r\n";
      parts.push(utf8Encode(head), utf8Encode(value.replace(/\r(?!\n)|(?<!\r)\n/g, "\r\n")));
    } else {
      head += `; filename="${escapeMultipartName(value.name)}"\r\nContent-Type: ${
        value.type || "application/octet-stream"
      }\r\n\r\n`;
      parts.push(utf8Encode(head), blobBytes(value));
    }
    parts.push(utf8Encode("\r\n"));
  }
  parts.push(utf8Encode(`--${boundary}--\r\n`));
  return { bytes: concatBytes(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

function indexOfBytes(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

function parseMultipart(bytes: Uint8Array, boundary: string): FormData {
  const form = new FormData();
  const delimiter = utf8Encode(`--${boundary}`);
  const fail = () => new TypeError("Failed to parse body as FormData.");
  let pos = indexOfBytes(bytes, delimiter, 0);
  if (pos === -1) throw fail();
  while (true) {
    pos += delimiter.length;
    if (bytes[pos] === 0x2d && bytes[pos + 1] === 0x2d) break; // closing "--"
    if (bytes[pos] !== 0x0d || bytes[pos + 1] !== 0x0a) throw fail();
    pos += 2;
    const headerEnd = indexOfBytes(bytes, utf8Encode("\r\n\r\n"), pos);
    if (headerEnd === -1) throw fail();
    const headerText = latin1(bytes.subarray(pos, headerEnd));
    const next = indexOfBytes(bytes, utf8Encode(`\r\n--${boundary}`), headerEnd + 4);
    if (next === -1) throw fail();
    const content = bytes.subarray(headerEnd + 4, next);
    let name: string | undefined;
    let filename: string | undefined;
    let contentType = "";
    for (const line of headerText.split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon === -1) continue;
      const key = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (key === "content-disposition") {
        const nameMatch = /(?:^|;)\s*name="([^"]*)"/i.exec(value);
        const fileMatch = /(?:^|;)\s*filename="([^"]*)"/i.exec(value);
        if (nameMatch) name = decodeLatin1AsUtf8(nameMatch[1]!);
        if (fileMatch) filename = decodeLatin1AsUtf8(fileMatch[1]!);
      } else if (key === "content-type") {
        contentType = value;
      }
    }
    if (name === undefined) throw fail();
    if (filename !== undefined) {
      form.append(name, makeFile(content.slice(), filename, contentType.toLowerCase(), now()));
    } else {
      form.append(name, utf8DecodeBody(content));
    }
    pos = next + 2;
  }
  return form;
}

function decodeLatin1AsUtf8(s: string): string {
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i) & 0xff;
  return utf8DecodeBody(bytes).replace(/%22/g, '"').replace(/%0D/g, "\r").replace(/%0A/g, "\n");
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

interface BodyData {
  /** The body's bytes, while it has no stream (null: no body, or a stream). */
  bytes: Uint8Array | null;
  /** The body as a ReadableStream: given, or made over `bytes` when `body` was first read. */
  stream: unknown;
  /** Read by text(), json(), … (a stream's own reads show in its disturbed flag). */
  used: boolean;
}

/** A body of bytes in memory, or none. */
function bytesBody(bytes: Uint8Array | null): BodyData {
  return { bytes, stream: null, used: false };
}

/** The bytes (or stream) and default Content-Type of a BodyInit, as the Fetch standard's "extract a body". */
function extractBody(init: unknown): {
  bytes: Uint8Array | null;
  stream: unknown;
  type: string | null;
} {
  const body = extractBytes(init);
  return body === null
    ? { bytes: null, stream: init, type: null }
    : { bytes: body.bytes, stream: null, type: body.type };
}

/** extractBody for everything but a ReadableStream (null for one). */
function extractBytes(init: unknown): { bytes: Uint8Array; type: string | null } | null {
  if (typeof init === "string") {
    return { bytes: utf8Encode(toUSVString(init)), type: "text/plain;charset=UTF-8" };
  }
  const view = viewBytes(init);
  if (view !== undefined) return { bytes: view.slice(), type: null };
  if (isBlob(init)) {
    return { bytes: blobBytes(init), type: init.type === "" ? null : init.type };
  }
  if (isURLSearchParams(init)) {
    return {
      bytes: utf8Encode(String(init)),
      type: "application/x-www-form-urlencoded;charset=UTF-8",
    };
  }
  if (init instanceof FormData) {
    const { bytes, contentType } = encodeMultipart(init);
    return { bytes, type: contentType };
  }
  if (isReadableStream(init)) {
    const s = streams();
    if (s.isLocked(init) || s.isDisturbed(init)) {
      throw new TypeError("Response body object should not be disturbed or locked");
    }
    return null;
  }
  return { bytes: utf8Encode(toUSVString(init)), type: "text/plain;charset=UTF-8" };
}

function isURLSearchParams(value: unknown): boolean {
  // The prelude's own class, if its module was evaluated (else no instance exists):
  // reading the global would evaluate it, and it may not be ours any more.
  const Ctor = loadedGlobal("URLSearchParams") as (new () => unknown) | undefined;
  return typeof Ctor === "function" && value instanceof Ctor;
}

const bodyData = new WeakMap<object, BodyData>();
const headersOf = new WeakMap<object, Headers>();

function bdata(self: unknown): BodyData {
  const d = typeof self === "object" && self !== null ? bodyData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

/** Whether the body was read (or its stream read from or cancelled): the Fetch standard's "disturbed". */
function disturbed(d: BodyData): boolean {
  return d.used || (d.stream !== null && streams().isDisturbed(d.stream));
}

/** Whether the body can no longer be read: disturbed, or its stream locked by a reader. */
function unusable(d: BodyData): boolean {
  return disturbed(d) || (d.stream !== null && streams().isLocked(d.stream));
}

function consume(self: unknown): Promise<Uint8Array> {
  try {
    const d = bdata(self);
    if (unusable(d)) {
      return Promise.reject(new TypeError("Body is unusable: Body has already been read"));
    }
    if (d.bytes === null && d.stream === null) return Promise.resolve(new Uint8Array(0));
    guardWrite(self, "a body read");
    d.used = true;
    if (d.stream !== null) return streams().readAll(d.stream);
    return Promise.resolve(d.bytes!);
  } catch (err) {
    return Promise.reject(err);
  }
}

/** The body's stream, made over its bytes on first use. */
function bodyStream(self: object, d: BodyData): unknown {
  if (d.stream === null && d.bytes !== null) {
    guardWrite(self, "a body read");
    const s = streams();
    if (d.used) {
      // Already read by text() & co.: a stream that is read to its end, locked and disturbed.
      d.stream = s.fromBytes(new Uint8Array(0));
      void s.reader(d.stream).read();
    } else {
      d.stream = s.fromBytes(d.bytes);
    }
    d.bytes = null;
  }
  return d.stream;
}

/** A copy of a body for clone(): the bytes shared (never written), or the stream teed. */
function cloneBody(self: object, d: BodyData): BodyData {
  if (d.stream === null) return bytesBody(d.bytes);
  guardWrite(self, "a body cloned");
  const [mine, theirs] = streams().tee(d.stream);
  d.stream = mine;
  return { bytes: null, stream: theirs, used: false };
}

function mimeEssence(self: object): string {
  const type = headersOf.get(self)?.get("content-type") ?? "";
  return type.split(";")[0]!.trim().toLowerCase();
}

/** The Body mixin, shared by Request and Response. */
abstract class BodyMixin {
  get body(): unknown {
    const d = bdata(this);
    if (d.bytes === null && d.stream === null) return null;
    return guardReach(this, bodyStream(this, d));
  }

  get bodyUsed(): boolean {
    const d = bdata(this);
    return (d.bytes !== null || d.stream !== null) && disturbed(d);
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    return consume(this).then(toArrayBuffer);
  }

  bytes(): Promise<Uint8Array> {
    return consume(this).then((b) => b.slice());
  }

  blob(): Promise<Blob> {
    return consume(this).then((b) => {
      const type = headersOf.get(this)?.get("content-type") ?? "";
      return makeBlob(b, /^[\x20-\x7e]*$/.test(type) ? type.toLowerCase() : "");
    });
  }

  text(): Promise<string> {
    return consume(this).then(utf8DecodeBody);
  }

  json(): Promise<unknown> {
    return consume(this).then((b) => JSON.parse(utf8DecodeBody(b)));
  }

  formData(): Promise<FormData> {
    return consume(this).then((b) => {
      const essence = mimeEssence(this);
      if (essence === "application/x-www-form-urlencoded") {
        const Params = (
          globalThis as { URLSearchParams?: new (s: string) => Iterable<[string, string]> }
        ).URLSearchParams!;
        const form = new FormData();
        // The urlencoded parser decodes UTF-8 without BOM stripping.
        for (const [k, v] of new Params(utf8DecodeLossy(b))) form.append(k, v);
        return form;
      }
      if (essence === "multipart/form-data") {
        const header = headersOf.get(this)?.get("content-type") ?? "";
        const match = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(header);
        const boundary = match?.[1] ?? match?.[2];
        if (boundary === undefined) throw new TypeError("Failed to parse body as FormData.");
        return parseMultipart(b, boundary);
      }
      throw new TypeError(
        'Content-Type was not one of "multipart/form-data" or "application/x-www-form-urlencoded".',
      );
    });
  }
}

function initBody(self: object, body: unknown, headers: Headers): void {
  if (body === undefined || body === null) {
    bodyData.set(self, bytesBody(null));
    return;
  }
  const { bytes, stream, type } = extractBody(body);
  if (type !== null && !headers.has("content-type")) headers.append("content-type", type);
  bodyData.set(self, { bytes, stream, used: false });
}

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

interface RequestData {
  method: string;
  url: string;
  redirect: string;
  signal: AbortSignal;
  cache: string;
  credentials: string;
  mode: string;
  referrer: string;
  referrerPolicy: string;
  integrity: string;
  keepalive: boolean;
}

const requestData = new WeakMap<object, RequestData>();

function rdata(self: unknown): RequestData {
  const d = typeof self === "object" && self !== null ? requestData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

const NORMALIZED_METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
const FORBIDDEN_METHODS = ["CONNECT", "TRACE", "TRACK"];

function parseUrl(input: string, where: string): string {
  const URLCtor = (globalThis as { URL?: new (u: string) => { href: string } }).URL!;
  try {
    return new URLCtor(input).href;
  } catch {
    throw new TypeError(`${where}: Failed to parse URL from ${input}`);
  }
}

function enumOption(value: unknown, allowed: string[], fallback: string, what: string): string {
  if (value === undefined) return fallback;
  const s = String(value);
  if (!allowed.includes(s)) {
    throw new TypeError(
      `Failed to construct 'Request': The provided value '${s}' is not a valid enum value of type ${what}.`,
    );
  }
  return s;
}

export class Request extends BodyMixin {
  constructor(input: unknown, init: unknown = {}) {
    super();
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    if (arguments.length === 0) {
      throw new TypeError(
        "Failed to construct 'Request': 1 argument required, but only 0 present.",
      );
    }
    const options = (init ?? {}) as Record<string, unknown>;
    let base: RequestData;
    let inputBody: BodyData | null = null;
    let inputHeaders: Headers | undefined;
    if (input instanceof Request) {
      const d = rdata(input);
      base = { ...d };
      const bd = bdata(input);
      if (unusable(bd)) {
        throw new TypeError(
          "Failed to construct 'Request': Cannot construct a Request with a Request object that has already been used.",
        );
      }
      if (bd.bytes !== null || bd.stream !== null) inputBody = bd;
      inputHeaders = headersOf.get(input);
    } else {
      base = {
        method: "GET",
        url: parseUrl(toUSVString(input), "Failed to construct 'Request'"),
        redirect: "follow",
        signal: new AbortController().signal,
        cache: "default",
        credentials: "same-origin",
        mode: "cors",
        referrer: "about:client",
        referrerPolicy: "",
        integrity: "",
        keepalive: false,
      };
    }
    if (options.method !== undefined) {
      const m = toDOMString(options.method);
      if (!TOKEN.test(m)) {
        throw new TypeError(`Failed to construct 'Request': '${m}' is not a valid HTTP method.`);
      }
      const upper = m.toUpperCase();
      if (FORBIDDEN_METHODS.includes(upper)) {
        throw new TypeError(`Failed to construct 'Request': '${m}' HTTP method is unsupported.`);
      }
      base.method = NORMALIZED_METHODS.includes(upper) ? upper : m;
    }
    base.redirect = enumOption(
      options.redirect,
      ["follow", "error", "manual"],
      base.redirect,
      "RequestRedirect",
    );
    base.cache = enumOption(
      options.cache,
      ["default", "no-store", "reload", "no-cache", "force-cache", "only-if-cached"],
      base.cache,
      "RequestCache",
    );
    base.credentials = enumOption(
      options.credentials,
      ["omit", "same-origin", "include"],
      base.credentials,
      "RequestCredentials",
    );
    base.mode = enumOption(
      options.mode,
      ["same-origin", "no-cors", "cors", "navigate"],
      base.mode,
      "RequestMode",
    );
    if (base.mode === "navigate") {
      throw new TypeError(
        "Failed to construct 'Request': Cannot construct a Request with a RequestInit whose mode member is set as 'navigate'.",
      );
    }
    if (options.referrer !== undefined) {
      const r = toUSVString(options.referrer);
      base.referrer =
        r === "" ? "" : r === "about:client" ? r : parseUrl(r, "Failed to construct 'Request'");
    }
    if (options.referrerPolicy !== undefined) base.referrerPolicy = String(options.referrerPolicy);
    if (options.integrity !== undefined) base.integrity = String(options.integrity);
    if (options.keepalive !== undefined) base.keepalive = Boolean(options.keepalive);
    if (options.signal !== undefined && options.signal !== null) {
      if (!(options.signal instanceof AbortSignal)) {
        throw new TypeError(
          "Failed to construct 'Request': member signal is not of type AbortSignal.",
        );
      }
      base.signal = AbortSignal.any([options.signal]);
    } else if (input instanceof Request) {
      base.signal = AbortSignal.any([base.signal]);
    }
    requestData.set(this, base);

    const headers = new Headers(options.headers !== undefined ? options.headers : inputHeaders);
    headersOf.set(this, headers);

    const hasBody = options.body !== undefined && options.body !== null;
    if ((hasBody || inputBody !== null) && (base.method === "GET" || base.method === "HEAD")) {
      if (hasBody || options.method !== undefined) {
        throw new TypeError("Request with GET/HEAD method cannot have body.");
      }
    }
    if (hasBody) {
      initBody(this, options.body, headers);
    } else {
      bodyData.set(
        this,
        inputBody === null
          ? bytesBody(null)
          : { bytes: inputBody.bytes, stream: inputBody.stream, used: false },
      );
    }
    if (input instanceof Request && inputBody !== null) {
      // The input's body moved to the new request.
      guardWrite(input, "a Request's body taken by another");
      bdata(input).used = true;
    }
  }

  get method(): string {
    return rdata(this).method;
  }
  get url(): string {
    return rdata(this).url;
  }
  get headers(): Headers {
    rdata(this);
    return guardReach(this, headersOf.get(this)!);
  }
  get redirect(): string {
    return rdata(this).redirect;
  }
  get signal(): AbortSignal {
    return guardReach(this, rdata(this).signal);
  }
  get cache(): string {
    return rdata(this).cache;
  }
  get credentials(): string {
    return rdata(this).credentials;
  }
  get mode(): string {
    return rdata(this).mode;
  }
  get destination(): string {
    rdata(this);
    return "";
  }
  get referrer(): string {
    return rdata(this).referrer;
  }
  get referrerPolicy(): string {
    return rdata(this).referrerPolicy;
  }
  get integrity(): string {
    return rdata(this).integrity;
  }
  get keepalive(): boolean {
    return rdata(this).keepalive;
  }
  get isReloadNavigation(): boolean {
    rdata(this);
    return false;
  }
  get isHistoryNavigation(): boolean {
    rdata(this);
    return false;
  }
  get duplex(): string {
    rdata(this);
    return "half";
  }

  clone(): Request {
    const d = rdata(this);
    const bd = bdata(this);
    if (unusable(bd)) {
      throw new TypeError("Failed to execute 'clone' on 'Request': Request body is already used");
    }
    const copy = Object.create(Request.prototype) as Request;
    requestData.set(copy, { ...d, signal: AbortSignal.any([d.signal]) });
    headersOf.set(copy, new Headers(headersOf.get(this)));
    bodyData.set(copy, cloneBody(this, bd));
    return copy;
  }

  [inspectCustom](depth: number, options: unknown, inspect: (v: unknown, o: unknown) => string) {
    const d = rdata(this);
    return `Request ${inspect(
      { method: d.method, url: d.url, headers: headersOf.get(this), bodyUsed: this.bodyUsed },
      { ...(options as object), depth },
    )}`;
  }
}
setInterfaceName(Request, "Request");
guardInternals(Request.prototype, (o) => [
  weakMapGet(headersOf, o),
  weakMapGet(requestData, o)?.signal,
  weakMapGet(bodyData, o)?.stream,
]);

// ---------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------

interface ResponseData {
  type: string;
  url: string;
  redirected: boolean;
  status: number;
  statusText: string;
}

const responseData = new WeakMap<object, ResponseData>();
// HTTP actions (see globals.ts, httpRequest/httpResponse of the env).
httpBridge.toRequest = (m) => {
  if (m.streamed !== true) {
    return new Request(m.url, {
      method: m.method,
      headers: m.headers,
      ...(m.body === null ? {} : { body: base64ToBytes(m.body) }),
    });
  }
  // The body stays on the host: each pull of the stream reads the next chunk.
  const request = new Request(m.url, { method: m.method, headers: m.headers });
  bodyData.set(request, {
    bytes: null,
    stream: streams().fromHost(readRequestChunk, cancelRequestBody),
    used: false,
  });
  return request;
};

async function readRequestChunk(): Promise<Uint8Array | null> {
  const chunk = JSON.parse(await host("tessera/httpRequestRead", {})) as string | null;
  return chunk === null ? null : (base64ToBytes(chunk) ?? new Uint8Array(0));
}

function cancelRequestBody(): void {
  void quietly(host("tessera/httpRequestCancel", {}));
}

async function quietly(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch {
    // Nobody waits for it.
  }
}

httpBridge.fromResponse = (r) => {
  if (!(r instanceof Response)) throw new TypeError("An HTTP action must return a Response");
  const d = responseData.get(r)!;
  const body = bodyData.get(r)!;
  if (unusable(body)) throw new TypeError("The HTTP action's Response body was already read");
  const head = { status: d.status, statusText: d.statusText, headers: [...headersOf.get(r)!] };
  if (body.stream === null) {
    return { ...head, body: body.bytes === null ? null : bytesToBase64(body.bytes) };
  }
  body.used = true;
  return streamToHost(body.stream, head);
};

/**
 * Sends a streamed response body to the host as the stream produces it: the
 * status and headers with the first chunk (`tessera/httpResponseStart`), then
 * one `tessera/httpResponseWrite` per chunk, each awaited (the host answers
 * when the client can take more). A stream that ends without a byte becomes
 * an empty buffered body. When the client goes away
 * (`tessera/httpResponseAborted` settles) the stream is cancelled.
 */
async function streamToHost(
  stream: unknown,
  head: { status: number; statusText: string; headers: [string, string][] },
): Promise<HttpMessage> {
  const s = streams();
  const reader = s.reader(stream);
  let gone = false;
  const watch = async () => {
    try {
      await host("tessera/httpResponseAborted", {});
    } catch {
      return;
    }
    gone = true;
    const Exception = preludeGlobal("DOMException") as new (m: string, n: string) => Error;
    await quietly(reader.cancel(new Exception("The client disconnected", "AbortError")));
  };
  void watch();
  let started = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || gone) break;
      const bytes = s.chunkBytes(value);
      if (bytes.length === 0) continue;
      const chunk = bytesToBase64(bytes);
      if (!started) {
        started = true;
        await host("tessera/httpResponseStart", { ...head, chunk });
      } else {
        await host("tessera/httpResponseWrite", { chunk });
      }
    }
  } catch (e) {
    if (gone) return { ...head, body: null, streamed: true, aborted: true };
    await quietly(reader.cancel(e));
    throw e;
  }
  if (!started) return { ...head, body: null, ...(gone ? { streamed: true, aborted: true } : {}) };
  return { ...head, body: null, streamed: true, aborted: gone };
}

// fetch (timers.ts) records the final URL of what it fetched.
responseUrl.set = (r, url, redirected) => {
  const d = responseData.get(r as object);
  if (d !== undefined) {
    d.url = url;
    d.redirected = redirected;
  }
};

function sdata(self: unknown): ResponseData {
  const d = typeof self === "object" && self !== null ? responseData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

const NULL_BODY_STATUSES = [101, 103, 204, 205, 304];
const REDIRECT_STATUSES = [301, 302, 303, 307, 308];
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;

function initResponse(self: object, body: unknown, init: unknown): void {
  const options = (init ?? {}) as { status?: unknown; statusText?: unknown; headers?: unknown };
  if (typeof options !== "object") {
    throw new TypeError(
      "Failed to construct 'Response': The provided value is not of type 'ResponseInit'.",
    );
  }
  const status = options.status === undefined ? 200 : Number(options.status);
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new RangeError(
      `Failed to construct 'Response': The status provided (${String(options.status)}) is outside the range [200, 599].`,
    );
  }
  const statusText = options.statusText === undefined ? "" : toDOMString(options.statusText);
  if (!REASON_PHRASE.test(statusText)) {
    throw new TypeError("Failed to construct 'Response': Invalid statusText");
  }
  responseData.set(self, { type: "default", url: "", redirected: false, status, statusText });
  const headers = new Headers(options.headers);
  headersOf.set(self, headers);
  if (body !== undefined && body !== null && NULL_BODY_STATUSES.includes(status)) {
    throw new TypeError(
      `Failed to construct 'Response': Response with null body status cannot have body`,
    );
  }
  initBody(self, body, headers);
}

export class Response extends BodyMixin {
  constructor(body: unknown = null, init: unknown = {}) {
    super();
    initResponse(this, body, init);
  }

  static error(): Response {
    const r = Object.create(Response.prototype) as Response;
    responseData.set(r, { type: "error", url: "", redirected: false, status: 0, statusText: "" });
    headersOf.set(r, headersWithGuard("immutable"));
    bodyData.set(r, bytesBody(null));
    return r;
  }

  static redirect(url: unknown, status: unknown = 302): Response {
    const href = parseUrl(toUSVString(url), "Failed to execute 'redirect' on 'Response'");
    const s = Number(status);
    if (!REDIRECT_STATUSES.includes(s)) {
      throw new RangeError(
        `Failed to execute 'redirect' on 'Response': Invalid status code ${String(status)}`,
      );
    }
    const r = Object.create(Response.prototype) as Response;
    responseData.set(r, { type: "default", url: "", redirected: false, status: s, statusText: "" });
    headersOf.set(r, headersWithGuard("immutable", [["location", href]]));
    bodyData.set(r, bytesBody(null));
    return r;
  }

  static json(data: unknown, init: unknown = {}): Response {
    const text = JSON.stringify(data);
    if (text === undefined) {
      throw new TypeError("Failed to execute 'json' on 'Response': Value is not JSON serializable");
    }
    const r = Object.create(Response.prototype) as Response;
    initResponse(r, utf8Encode(text), init);
    const headers = headersOf.get(r)!;
    if (!headers.has("content-type")) headers.append("content-type", "application/json");
    return r;
  }

  get type(): string {
    return sdata(this).type;
  }
  get url(): string {
    return sdata(this).url;
  }
  get redirected(): boolean {
    return sdata(this).redirected;
  }
  get status(): number {
    return sdata(this).status;
  }
  get ok(): boolean {
    const s = sdata(this).status;
    return s >= 200 && s <= 299;
  }
  get statusText(): string {
    return sdata(this).statusText;
  }
  get headers(): Headers {
    sdata(this);
    return guardReach(this, headersOf.get(this)!);
  }

  clone(): Response {
    const d = sdata(this);
    const bd = bdata(this);
    if (unusable(bd)) {
      throw new TypeError("Failed to execute 'clone' on 'Response': Response body is already used");
    }
    const copy = Object.create(Response.prototype) as Response;
    responseData.set(copy, { ...d });
    const h = headersOf.get(this)!;
    headersOf.set(
      copy,
      headersWithGuard(
        hdata(h).guard,
        hdata(h).list.map(([k, v]) => [k, v]),
      ),
    );
    bodyData.set(copy, cloneBody(this, bd));
    return copy;
  }

  [inspectCustom](depth: number, options: unknown, inspect: (v: unknown, o: unknown) => string) {
    const d = sdata(this);
    return `Response ${inspect(
      {
        status: d.status,
        statusText: d.statusText,
        headers: headersOf.get(this),
        bodyUsed: this.bodyUsed,
        ok: this.ok,
        redirected: d.redirected,
        type: d.type,
        url: d.url,
      },
      { ...(options as object), depth },
    )}`;
  }
}
setInterfaceName(Response, "Response");
guardInternals(Response.prototype, (o) => [
  weakMapGet(headersOf, o),
  weakMapGet(bodyData, o)?.stream,
]);
