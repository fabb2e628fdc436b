/** Hostile inputs and clients for the server's hardening tests: images that lie about their size, raw sockets. */
import * as net from 'node:net';
import * as zlib from 'node:zlib';

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A small PNG whose header declares width x height at 16-bit RGBA; only its first `rows` rows
 * (of zeros) are present, so the file is small and decoding it fails late.
 */
export function pngDeclaring(width: number, height: number, rows = 2): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([16, 6, 0, 0, 0], 8); // 16 bits, RGBA, deflate, no filter method, no interlace
  const raw = Buffer.alloc(Math.min(rows, height) * (1 + width * 8));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

export function connect(base: string): Promise<net.Socket> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname, () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * Resolves when the server closes `sock`: what it sent and after how many ms; null if it is
 * still open after `ms` (then the socket is destroyed).
 */
export function whenClosed(sock: net.Socket, ms: number): Promise<{ ms: number; data: string } | null> {
  const t0 = performance.now();
  let data = '';
  sock.on('data', (b: Buffer) => (data += b.toString('latin1')));
  sock.on('error', () => undefined);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(null);
    }, ms);
    sock.once('close', () => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - t0, data });
    });
  });
}

/** Writes `bytes` one at a time, `everyMs` apart, until the socket closes or `stop` is called. */
export function trickle(sock: net.Socket, everyMs: number): () => void {
  const timer = setInterval(() => {
    if (sock.destroyed) clearInterval(timer);
    else sock.write('A');
  }, everyMs);
  sock.once('close', () => clearInterval(timer));
  return () => clearInterval(timer);
}
