/**
 * An invalid Convex value: wrong type, broken limit, malformed wire form.
 * `path` names the offending field the way the official library does
 * (`.items[3].name`), empty for the value itself.
 *
 * Checks throw without knowing where they are; each enclosing array or
 * object adds its segment on the way out (`within`), so the happy path never
 * builds path strings.
 */
export class ValueError extends Error {
  override name = "ValueError";
  constructor(
    readonly detail: string,
    public path = "",
  ) {
    super(format(detail, path));
  }

  /** Records that the error happened inside `segment` (`.name`, `[3]`) of a containing value. */
  within(segment: string): this {
    this.path = segment + this.path;
    this.message = format(this.detail, this.path);
    return this;
  }
}

function format(detail: string, path: string): string {
  return path ? `${detail} (at path ${path})` : detail;
}

/** Re-throws `e`, adding a path segment if it is a `ValueError`. */
export function rethrowWithin(e: unknown, segment: string): never {
  if (e instanceof ValueError) throw e.within(segment);
  throw e;
}

/** The path segment of an object field, quoting names that are not identifiers. */
export function fieldSegment(field: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(field) ? `.${field}` : `[${JSON.stringify(field)}]`;
}

/** Appends an object field to a path. */
export function fieldPath(path: string, field: string): string {
  return path + fieldSegment(field);
}
