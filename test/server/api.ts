/** Typed references to the fixture app's functions (test/fixtures/app/convex) for the official clients. */
import { type FunctionReference, makeFunctionReference } from "convex/server";

type Ref<T extends "query" | "mutation", Args, Ret> = FunctionReference<
  T,
  "public",
  Args & Record<string, Any>,
  Ret
>;
// biome-ignore lint/suspicious/noExplicitAny: the fixture's generated API is untyped.
type Any = any;

const query = <Args = Any, Ret = Any>(name: string): Ref<"query", Args, Ret> =>
  makeFunctionReference<"query", Args & Record<string, Any>, Ret>(name);
const mutation = <Args = Any, Ret = Any>(name: string): Ref<"mutation", Args, Ret> =>
  makeFunctionReference<"mutation", Args & Record<string, Any>, Ret>(name);

export const api = {
  items: {
    add: mutation<{ name: string; price: number; remaining: number }, string>("items:add"),
    get: query<{ id: string }>("items:get"),
    inStock: query<Record<string, never>, string[]>("items:inStock"),
    secret: query<Record<string, never>, string>("items:secret"),
    echo: query("items:echo"),
  },
  behaviour: {
    failWithData: query<Record<string, never>, never>("behaviour:failWithData"),
    fail: mutation<{ text: string }, never>("behaviour:fail"),
  },
  counters: {
    get: query<{ name: string }, number>("counters:get"),
    sum: query<{ names: string[] }, number>("counters:sum"),
    increment: mutation<{ name: string; by?: number }, number>("counters:increment"),
    incrementPair: mutation<{ a: string; b: string }, null>("counters:incrementPair"),
    refuse: mutation<{ code: string }, never>("counters:refuse"),
    mark: mutation<{ group: string; tag: string }, string>("counters:mark"),
    marks: query<{ group: string }, string[]>("counters:marks"),
    markIds: query<{ group: string }, Record<string, string>>("counters:markIds"),
  },
};
