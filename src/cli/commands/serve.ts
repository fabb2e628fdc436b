import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { SERVER_DEFAULTS, type ServerOptions, createServer } from '../../server/app.js';
import { UserError } from '../../util/errors.js';
import { shippedModelDir } from '../models.js';
import { choiceOption, floatOption, intOption } from '../options.js';

interface ServeFlags {
  port: number;
  host: string;
  baseline?: string;
  rediff?: string;
  maxUpload: number;
  queue: number;
  concurrency: number;
  threads?: number;
  stepDelay: number;
  maxPixels: number;
  decodeConcurrency: number;
  requestTimeout: number;
  idleTimeout: number;
  keepAliveTimeout: number;
  web: 'auto' | 'build' | 'prebuilt';
  log?: boolean;
}

const seconds = (s: number): number => Math.round(s * 1000);

/** The server's limits from the flags (times are given in seconds, the server takes ms). */
export function serverLimits(
  f: Pick<
    ServeFlags,
    | 'maxUpload'
    | 'maxPixels'
    | 'queue'
    | 'concurrency'
    | 'decodeConcurrency'
    | 'requestTimeout'
    | 'idleTimeout'
    | 'keepAliveTimeout'
  >,
): Omit<ServerOptions, 'models'> {
  return {
    maxUploadBytes: f.maxUpload,
    maxPixels: f.maxPixels,
    queueLimit: f.queue,
    concurrency: f.concurrency,
    decodeConcurrency: f.decodeConcurrency,
    requestTimeoutMs: seconds(f.requestTimeout),
    idleTimeoutMs: seconds(f.idleTimeout),
    keepAliveTimeoutMs: seconds(f.keepAliveTimeout),
  };
}

const hasCheckpoint = (dir: string): boolean => fs.existsSync(path.join(dir, 'checkpoint.json'));

/** The models to serve: given flags must exist; shipped defaults are used when present. */
export function modelsToServe(f: { baseline?: string; rediff?: string }): {
  models: { name: string; dir: string }[];
  missing: string[];
} {
  const models: { name: string; dir: string }[] = [];
  const missing: string[] = [];
  for (const name of ['baseline', 'rediff'] as const) {
    const given = f[name];
    if (given) {
      if (!hasCheckpoint(given))
        throw new UserError(`--${name} ${given}: no checkpoint there (checkpoint.json missing)`);
      models.push({ name, dir: given });
      continue;
    }
    const dir = shippedModelDir(name);
    if (hasCheckpoint(dir)) models.push({ name, dir });
    else missing.push(`${name} (${dir})`);
  }
  if (models.length === 0) {
    throw new UserError(
      `no models to serve: no shipped model at ${missing.join(' or ')}; train one with "rediff train" or pass ` +
        `--baseline/--rediff <checkpoint>`,
    );
  }
  return { models, missing };
}

export function registerServe(program: Command): void {
  const command = program
    .command('serve')
    .description('serve the captioning API and the page that shows the models refine, live')
    .option('--port <n>', 'port to listen on', intOption('--port', 0, 65535), 8080)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--baseline <dir>', 'baseline (mask-prediction) checkpoint (default: the shipped one)')
    .option('--rediff <dir>', 'ReDiff checkpoint (default: the shipped one)');
  limitFlags(command)
    .option('--threads <n>', 'onnxruntime threads for inference', intOption('--threads', 1, 256))
    .option(
      '--step-delay <ms>',
      'pause before every sampling step (slow motion, to watch the refinement)',
      intOption('--step-delay', 0, 10000),
      0,
    )
    .option(
      '--web <source>',
      'the page: auto, build (bundle now) or prebuilt (dist/public)',
      choiceOption('--web', ['auto', 'build', 'prebuilt'] as const),
      'auto',
    )
    .option('--log', 'log every request')
    .action(serve);
}

/** The limits a client meets: upload and image size, the queue, decoders, timeouts. */
function limitFlags(c: Command): Command {
  return c
    .option(
      '--max-upload <bytes>',
      'largest accepted image upload',
      intOption('--max-upload', 1024),
      SERVER_DEFAULTS.maxUploadBytes,
    )
    .option(
      '--max-pixels <n>',
      'largest accepted image, width x height (read from its header before decoding)',
      intOption('--max-pixels', 1),
      SERVER_DEFAULTS.maxPixels,
    )
    .option(
      '--queue <n>',
      'generation jobs that may wait (their images being decoded included); more get 503',
      intOption('--queue', 0),
      8,
    )
    .option('--concurrency <n>', 'generation jobs run at once', intOption('--concurrency', 1, 64), 2)
    .option(
      '--decode-concurrency <n>',
      'images decoded at once',
      intOption('--decode-concurrency', 1, 64),
      SERVER_DEFAULTS.decodeConcurrency,
    )
    .option(
      '--request-timeout <s>',
      'seconds a client has to send a whole request (then 408); 0 = no limit',
      floatOption('--request-timeout', 0, 86400),
      SERVER_DEFAULTS.requestTimeoutMs / 1000,
    )
    .option(
      '--idle-timeout <s>',
      'seconds of silence after which a connection is closed; 0 = never',
      floatOption('--idle-timeout', 0, 86400),
      SERVER_DEFAULTS.idleTimeoutMs / 1000,
    )
    .option(
      '--keep-alive-timeout <s>',
      'seconds an idle keep-alive connection stays open',
      floatOption('--keep-alive-timeout', 0, 3600),
      SERVER_DEFAULTS.keepAliveTimeoutMs / 1000,
    );
}

/** `rediff serve`: load the models, listen, and serve until SIGINT or SIGTERM. */
async function serve(f: ServeFlags): Promise<void> {
  const { models, missing } = modelsToServe(f);
  for (const m of missing) process.stderr.write(`rediff: no shipped model ${m}; serving without it\n`);
  process.stderr.write(`loading ${models.map((m) => `${m.name} from ${m.dir}`).join(', ')} ...\n`);
  const server = await createServer({
    models,
    ...serverLimits(f),
    web: f.web,
    stepDelayMs: f.stepDelay,
    logger: Boolean(f.log),
    ...(f.threads ? { threads: f.threads } : {}),
  });
  let url: string;
  try {
    url = await server.listen(f.port, f.host);
  } catch (e) {
    await server.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new UserError(`port ${f.port} is in use; pick another with --port`);
    if (code === 'EACCES') throw new UserError(`not allowed to listen on port ${f.port}`);
    throw e;
  }
  console.log(
    `rediff serving ${models.map((m) => m.name).join(' and ')} at ${url}/  (API: ${url}/v1/models; Ctrl-C stops)`,
  );
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      server.close().then(resolve, resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
