/** A tiny chat-completions server for the LLM expert's tests: records every request, answers as told. */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  body: { model: string; messages: Array<{ role: string; content: unknown }> };
  headers: http.IncomingHttpHeaders;
  draft: string;
}

export interface Reply {
  status?: number;
  headers?: Record<string, string>;
  /** Message content to answer with (wrapped in choices[0].message.content). */
  content?: string;
  /** Raw body instead of a chat-completions JSON. */
  rawBody?: string;
  delayMs?: number;
}

export interface TestServer {
  baseUrl: string;
  received: Received[];
  close(): Promise<void>;
  server: http.Server;
}

/** Draft text from the user message the expert sends. */
export function draftOf(body: Received['body']): string {
  const user = body.messages.find((m) => m.role === 'user');
  const parts = Array.isArray(user?.content) ? (user.content as Array<{ type: string; text?: string }>) : [];
  const text = parts.find((p) => p.type === 'text')?.text ?? '';
  return /Draft caption to check:\n(.*)\n/.exec(text)?.[1] ?? '';
}

export async function startServer(reply: (r: Received, n: number) => Reply): Promise<TestServer> {
  const received: Received[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
        res.writeHead(404).end('{"error":{"message":"no such route"}}');
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Received['body'];
      const r: Received = { body, headers: req.headers, draft: draftOf(body) };
      received.push(r);
      const out = reply(r, received.length);
      const send = (): void => {
        if (res.destroyed) return;
        const text =
          out.rawBody ??
          JSON.stringify({
            id: 'x',
            object: 'chat.completion',
            choices: [{ index: 0, message: { role: 'assistant', content: out.content ?? '' }, finish_reason: 'stop' }],
          });
        res.writeHead(out.status ?? 200, { 'content-type': 'application/json', ...out.headers });
        res.end(text);
      };
      if (out.delayMs) {
        const t = setTimeout(() => {
          timers.delete(t);
          send();
        }, out.delayMs);
        timers.add(t);
      } else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    received,
    server,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export async function withServer(
  reply: (r: Received, n: number) => Reply,
  fn: (s: TestServer) => Promise<void>,
): Promise<void> {
  const s = await startServer(reply);
  try {
    await fn(s);
  } finally {
    if (s.server.listening) await s.close();
  }
}
