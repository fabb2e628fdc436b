/**
 * A small FIFO semaphore whose waiters can give up: an aborted `acquire` leaves the queue and
 * rejects with the signal's reason, so a caller that went away never holds a place.
 */
export class Semaphore {
  private held = 0;
  private readonly queue: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1)
      throw new RangeError(`semaphore limit must be an integer >= 1, got ${limit}`);
  }

  /** Places taken now. */
  get active(): number {
    return this.held;
  }

  /** Callers waiting for a place. */
  get waiting(): number {
    return this.queue.length;
  }

  async acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw abortReason(signal);
    if (this.held < this.limit) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const go = (): void => {
        signal?.removeEventListener('abort', onAbort);
        this.held++;
        resolve();
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(go);
        if (i >= 0) this.queue.splice(i, 1);
        reject(abortReason(signal!));
      };
      this.queue.push(go);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  release(): void {
    this.held--;
    this.queue.shift()?.();
  }

  /** Runs `fn` holding a place. */
  async use<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}

export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted.', 'AbortError');
}
