/**
 * Progress reporting on stderr. On a TTY: a cli-progress bar redrawn in place, with payload
 * fields (loss, tok/s, ...) after it. Otherwise (logs, CI, pipes): one plain line each time
 * another `everyPercent` of the total is done, plus a final line at stop(), so logs stay
 * readable. With `enabled: false` nothing is printed.
 */
import cliProgress from 'cli-progress';

export type PayloadValue = number | string;
export type Payload = Record<string, PayloadValue>;

export interface ProgressOptions {
  /** Default true. */
  enabled?: boolean;
  /** Default process.stderr. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Non-TTY: print a line every this many percent. Default 10. */
  everyPercent?: number;
}

export interface Progress {
  /** Sets the current value (0..total) and, optionally, payload fields shown after the bar. */
  update(value: number, payload?: Payload): void;
  /** Ends the display (prints the final state when not on a TTY). Idempotent. */
  stop(): void;
}

/** Compact display of a payload value: integers as is, large numbers rounded, small to 4 digits. */
export function formatPayloadValue(v: PayloadValue): string {
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  return v.toPrecision(4);
}

export function formatPayload(payload: Payload): string {
  return Object.entries(payload)
    .map(([k, v]) => `${k} ${formatPayloadValue(v)}`)
    .join(' | ');
}

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

const NOOP: Progress = { update() {}, stop() {} };

export function createProgress(label: string, total: number, opts: ProgressOptions = {}): Progress {
  if (opts.enabled === false) return NOOP;
  const stream = opts.stream ?? process.stderr;
  const safeTotal = Math.max(0, total);
  let payload: Payload = {};
  let stopped = false;

  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: `${label} [{bar}] {percentage}% | {value}/{total} | {extra} | ETA {eta_formatted}`,
        hideCursor: true,
        etaBuffer: 50,
        fps: 10,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(safeTotal, 0, { extra: '' });
    return {
      update(value, p) {
        if (stopped) return;
        if (p) payload = { ...payload, ...p };
        bar.update(Math.min(value, safeTotal), { extra: formatPayload(payload) });
      },
      stop() {
        if (stopped) return;
        stopped = true;
        bar.stop();
      },
    };
  }

  const every = Math.max(1e-9, opts.everyPercent ?? 10);
  const start = Date.now();
  let lastBucket = 0;
  let lastValue = 0;
  let lastPrinted = -1;
  const line = (value: number): void => {
    const pct = safeTotal > 0 ? Math.floor((100 * value) / safeTotal) : 100;
    const extra = formatPayload(payload);
    stream.write(
      `${label}: ${pct}% (${value}/${safeTotal})${extra ? ' | ' + extra : ''} | ` +
        `${formatDuration(Date.now() - start)}\n`,
    );
    lastPrinted = value;
  };
  return {
    update(value, p) {
      if (stopped) return;
      if (p) payload = { ...payload, ...p };
      lastValue = Math.min(value, safeTotal);
      const pct = safeTotal > 0 ? (100 * lastValue) / safeTotal : 100;
      const bucket = Math.floor(pct / every);
      if (bucket > lastBucket) {
        lastBucket = bucket;
        line(lastValue);
      }
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (lastPrinted !== lastValue) line(lastValue);
    },
  };
}
