/**
 * Wall time of a long step, kept while it runs: `onTick` gets the seconds so far every
 * `everyMs` and once at the end, so that a step killed part-way (a session ending) still has
 * the time it spent on record, and the resumed step adds to it.
 */
export async function withWallTime<T>(
  fn: () => Promise<T>,
  onTick: (seconds: number) => Promise<void>,
  everyMs = 60_000,
): Promise<T> {
  const t0 = performance.now();
  const elapsed = (): number => (performance.now() - t0) / 1000;
  let writing: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    writing = writing.then(() => onTick(elapsed())).catch(() => undefined);
  }, everyMs);
  timer.unref();
  try {
    return await fn();
  } finally {
    clearInterval(timer);
    await writing;
    await onTick(elapsed());
  }
}
