import { ValueError } from "./errors.js";

/** Longest field name inside nested objects, and in the wire form. */
export const MAX_NESTED_FIELD_NAME_LENGTH = 1024;
/** Longest top-level field name of a document. */
export const MAX_TOP_LEVEL_FIELD_NAME_LENGTH = 64;

export const SYSTEM_FIELDS: ReadonlySet<string> = new Set(["_id", "_creationTime"]);

function checkCharacters(name: string): void {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 32 || c >= 127) {
      throw new ValueError(
        `Field name ${JSON.stringify(name)} has invalid character ${JSON.stringify(name[i])}: field names can only contain non-control ASCII characters`,
      );
    }
  }
}

/**
 * The rule the official library applies to every object key on the wire:
 * at most 1024 characters, no leading `$`, only non-control ASCII.
 */
export function checkNestedFieldName(name: string): void {
  if (name.length > MAX_NESTED_FIELD_NAME_LENGTH) {
    throw new ValueError(
      `Field name ${JSON.stringify(name.slice(0, 64))}... exceeds maximum field name length ${MAX_NESTED_FIELD_NAME_LENGTH}`,
    );
  }
  if (name === "__proto__") {
    // Assigning it would set an object's prototype instead of creating a field.
    throw new ValueError(`Field name "__proto__" is not allowed`);
  }
  if (name.startsWith("$")) {
    throw new ValueError(`Field name ${JSON.stringify(name)} starts with a '$', which is reserved`);
  }
  checkCharacters(name);
}

/** Stricter rules for the top-level fields of a stored document. */
export function checkTopLevelFieldName(name: string): void {
  if (name.length === 0) throw new ValueError("Field names must be nonempty");
  if (name.length > MAX_TOP_LEVEL_FIELD_NAME_LENGTH) {
    throw new ValueError(
      `Field name ${JSON.stringify(name.slice(0, 64))}... exceeds maximum top-level field name length ${MAX_TOP_LEVEL_FIELD_NAME_LENGTH}`,
    );
  }
  if (name.startsWith("_") && !SYSTEM_FIELDS.has(name)) {
    throw new ValueError(
      `Field name ${JSON.stringify(name)} starts with an underscore, which is reserved for system fields (_id, _creationTime) at the top level of a document`,
    );
  }
  checkNestedFieldName(name);
}
