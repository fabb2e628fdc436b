/**
 * Rows of equal length as one array: a copy, or, when they already fill one buffer in order (the
 * output of the pass that made them), that buffer. A row that repeats the one before it is batch
 * padding, whose results are dropped, so any data may stand in its slot.
 */
export function stackRows(rows: readonly Float32Array[]): Float32Array {
  const first = rows[0]!;
  const n = first.length;
  const bytes = n * Float32Array.BYTES_PER_ELEMENT;
  const inPlace =
    first.buffer.byteLength === rows.length * bytes &&
    rows.every((r, i) => (r.buffer === first.buffer && r.byteOffset === i * bytes) || r === rows[i - 1]);
  if (inPlace) return new Float32Array(first.buffer, 0, rows.length * n);
  const out = new Float32Array(rows.length * n);
  rows.forEach((r, i) => out.set(r, i * n));
  return out;
}
