export interface FunctionSpec {
  name: string;
  kind: "query" | "mutation" | "action" | "httpAction";
  visibility: "public" | "internal";
  /** Validator JSON text from `exportArgs()`, or null. */
  args: string | null;
  /** Validator JSON text from `exportReturns()`, or null. */
  returns: string | null;
  /** Set when the function's validators could not be exported (e.g. an undefined validator). */
  error?: string;
}

export function functionSpecs(
  ns: Record<string, unknown>,
  messageOf: (e: unknown) => string,
): FunctionSpec[];
