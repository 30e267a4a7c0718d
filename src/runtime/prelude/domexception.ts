/** `DOMException`, as the Web IDL standard defines it (name, message, legacy code). */
import { OriginalError } from "./intrinsics.js";
import { setInterfaceName } from "./util.js";

/** The legacy `code` of each name that has one (built on first use of `code`). */
let legacyCodes: Record<string, number> | undefined;

function legacyCode(name: string): number {
  legacyCodes ??= {
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
  return legacyCodes[name] ?? 0;
}

/** The legacy code constants, with values 1, 2, 3, … in this order. */
const CONSTANTS = [
  "INDEX_SIZE_ERR",
  "DOMSTRING_SIZE_ERR",
  "HIERARCHY_REQUEST_ERR",
  "WRONG_DOCUMENT_ERR",
  "INVALID_CHARACTER_ERR",
  "NO_DATA_ALLOWED_ERR",
  "NO_MODIFICATION_ALLOWED_ERR",
  "NOT_FOUND_ERR",
  "NOT_SUPPORTED_ERR",
  "INUSE_ATTRIBUTE_ERR",
  "INVALID_STATE_ERR",
  "SYNTAX_ERR",
  "INVALID_MODIFICATION_ERR",
  "NAMESPACE_ERR",
  "INVALID_ACCESS_ERR",
  "VALIDATION_ERR",
  "TYPE_MISMATCH_ERR",
  "SECURITY_ERR",
  "NETWORK_ERR",
  "ABORT_ERR",
  "URL_MISMATCH_ERR",
  "QUOTA_EXCEEDED_ERR",
  "TIMEOUT_ERR",
  "INVALID_NODE_TYPE_ERR",
  "DATA_CLONE_ERR",
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

// The original Error, even when user code replaced the global before first use.
export class DOMException extends OriginalError {
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
    return legacyCode(dataOf(this).name);
  }
}

// Defined one by one, on both objects: quicker in a fresh context than going
// through a descriptor map.
for (let i = 0; i < CONSTANTS.length; i++) {
  const constant = { value: i + 1, writable: false, enumerable: true, configurable: false };
  Object.defineProperty(DOMException, CONSTANTS[i]!, constant);
  Object.defineProperty(DOMException.prototype, CONSTANTS[i]!, constant);
}
setInterfaceName(DOMException, "DOMException");

export function isDOMException(value: unknown): value is DOMException {
  return typeof value === "object" && value !== null && data.has(value);
}
