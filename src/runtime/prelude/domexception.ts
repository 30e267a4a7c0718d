/** `DOMException`, as the Web IDL standard defines it (name, message, legacy code). */

const LEGACY_CODES: Record<string, number> = {
  IndexSizeError: 1,
  HierarchyRequestError: 3,
  WrongDocumentError: 4,
  InvalidCharacterError: 5,
  NoModificationAllowedError: 7,
  NotFoundError: 8,
  NotSupportedError: 9,
  InUseAttributeError: 10,
  InvalidStateError: 11,
  SyntaxError: 12,
  InvalidModificationError: 13,
  NamespaceError: 14,
  InvalidAccessError: 15,
  TypeMismatchError: 17,
  SecurityError: 18,
  NetworkError: 19,
  AbortError: 20,
  URLMismatchError: 21,
  QuotaExceededError: 22,
  TimeoutError: 23,
  InvalidNodeTypeError: 24,
  DataCloneError: 25,
};

const CONSTANTS: [string, number][] = [
  ["INDEX_SIZE_ERR", 1],
  ["DOMSTRING_SIZE_ERR", 2],
  ["HIERARCHY_REQUEST_ERR", 3],
  ["WRONG_DOCUMENT_ERR", 4],
  ["INVALID_CHARACTER_ERR", 5],
  ["NO_DATA_ALLOWED_ERR", 6],
  ["NO_MODIFICATION_ALLOWED_ERR", 7],
  ["NOT_FOUND_ERR", 8],
  ["NOT_SUPPORTED_ERR", 9],
  ["INUSE_ATTRIBUTE_ERR", 10],
  ["INVALID_STATE_ERR", 11],
  ["SYNTAX_ERR", 12],
  ["INVALID_MODIFICATION_ERR", 13],
  ["NAMESPACE_ERR", 14],
  ["INVALID_ACCESS_ERR", 15],
  ["VALIDATION_ERR", 16],
  ["TYPE_MISMATCH_ERR", 17],
  ["SECURITY_ERR", 18],
  ["NETWORK_ERR", 19],
  ["ABORT_ERR", 20],
  ["URL_MISMATCH_ERR", 21],
  ["QUOTA_EXCEEDED_ERR", 22],
  ["TIMEOUT_ERR", 23],
  ["INVALID_NODE_TYPE_ERR", 24],
  ["DATA_CLONE_ERR", 25],
];

interface DOMExceptionData {
  name: string;
  message: string;
}

const data = new WeakMap<object, DOMExceptionData>();

function dataOf(self: unknown): DOMExceptionData {
  const d = typeof self === "object" && self !== null ? data.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

export class DOMException extends Error {
  constructor(message: unknown = "", name: unknown = "Error") {
    super();
    data.set(this, { message: String(message), name: String(name) });
    // Re-capture so the stack's first line reads "<name>: <message>".
    const capture = (Error as { captureStackTrace?: (o: object, f: unknown) => void })
      .captureStackTrace;
    if (capture !== undefined) capture(this, DOMException);
  }

  override get name(): string {
    return dataOf(this).name;
  }

  override get message(): string {
    return dataOf(this).message;
  }

  get code(): number {
    return LEGACY_CODES[dataOf(this).name] ?? 0;
  }
}

const constantDescriptors: PropertyDescriptorMap = {};
for (const [key, value] of CONSTANTS) {
  constantDescriptors[key] = { value, writable: false, enumerable: true, configurable: false };
}
Object.defineProperties(DOMException, constantDescriptors);
Object.defineProperties(DOMException.prototype, constantDescriptors);
Object.defineProperty(DOMException.prototype, Symbol.toStringTag, {
  value: "DOMException",
  configurable: true,
});

export function isDOMException(value: unknown): value is DOMException {
  return typeof value === "object" && value !== null && data.has(value);
}
