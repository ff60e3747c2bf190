const QUOTE = 0x22;
const BACKSLASH = 0x5c;

export interface JsonArrayItems {
  /** Each element's value, as JSON.parse reads it. */
  values: unknown[];
  /** Each element's exact bytes, views into the body. */
  slices: Buffer[];
}

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

/**
 * A JSON array's elements, each as its value and its exact bytes (so an item's event can be
 * published byte for byte); undefined when the body is not valid JSON or not an array.
 */
export function splitJsonArray(buf: Buffer): JsonArrayItems | undefined {
  let values: unknown;
  try {
    values = JSON.parse(buf.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(values)) return undefined;
  // The body is valid JSON, so only strings and nesting need tracking to find the top-level commas.
  const slices: Buffer[] = [];
  const push = (from: number, to: number): void => {
    while (from < to && isSpace(buf[from] as number)) from++;
    while (to > from && isSpace(buf[to - 1] as number)) to--;
    if (to > from) slices.push(buf.subarray(from, to));
  };
  let depth = 0;
  let inString = false;
  let start = 0;
  for (let i = 0; i < buf.length; i++) {
    const byte = buf[i] as number;
    if (inString) {
      if (byte === BACKSLASH) i++;
      else if (byte === QUOTE) inString = false;
    } else if (byte === QUOTE) {
      inString = true;
    } else if (byte === 0x5b || byte === 0x7b) {
      if (++depth === 1) start = i + 1;
    } else if (byte === 0x5d || byte === 0x7d) {
      if (--depth === 0) {
        push(start, i);
        break;
      }
    } else if (byte === 0x2c && depth === 1) {
      push(start, i);
      start = i + 1;
    }
  }
  return { values, slices };
}
