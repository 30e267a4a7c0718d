export interface FunctionSpec {
  name: string;
  kind: "query" | "mutation" | "action" | "httpAction";
  visibility: "public" | "internal";
  args: string | null;
  returns: string | null;
  /** Why the validators could not be exported. */
  error?: string;
}

export function functionSpecs(
  ns: Record<string, unknown>,
  messageOf: (e: unknown) => string,
): FunctionSpec[];
