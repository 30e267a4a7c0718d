/**
 * An invalid Convex value: wrong type, broken limit, malformed wire form.
 * `path` names the offending field the way the official library does
 * (`.items[3].name`), empty for the value itself.
 */
export class ValueError extends Error {
  override name = "ValueError";
  constructor(
    message: string,
    readonly path: string = "",
  ) {
    super(path ? `${message} (at path ${path})` : message);
  }
}

/** Appends an object field to a path, quoting names that are not identifiers. */
export function fieldPath(path: string, field: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(field)
    ? `${path}.${field}`
    : `${path}[${JSON.stringify(field)}]`;
}

export function elementPath(path: string, index: number): string {
  return `${path}[${index}]`;
}
