/**
 * POST /v1/captions input: read from a multipart form (an `image` file plus text fields) or a
 * JSON body (`image` as base64, optionally a data: URL), then validated field by field. Every
 * rejection is an HttpError whose message names the field.
 */
import type { FastifyRequest } from 'fastify';
import { stepsForTokensPerStep } from '../sampling/caption.js';
import { SAMPLER_NAMES } from '../sampling/sampler.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { wordsOutsideVocabulary } from '../tokenizer/kinds.js';
import type { ModelConfig } from '../model/config.js';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The fields POST /v1/captions accepts besides `image`. */
export const CAPTION_FIELDS = [
  'model',
  'sampler',
  'tokens_per_step',
  'steps',
  'temperature',
  'seed',
  'threshold',
  'prompt',
  'allow_unk',
  'stream',
] as const;

export interface RawCaptionRequest {
  image: Buffer | null;
  /** Name used in image errors (the uploaded file name, or "image"). */
  imageName: string;
  fields: Record<string, unknown>;
}

const bad = (field: string, message: string): HttpError => new HttpError(400, message, field);

function tooLarge(limit: number): HttpError {
  return new HttpError(413, `upload too large: the image may be at most ${limit} bytes`, 'image');
}

/** Strict base64 (standard or URL-safe alphabet, optional padding, whitespace ignored). */
export function decodeBase64Image(value: unknown, limit: number): Buffer {
  if (typeof value !== 'string' || value.length === 0)
    throw bad('image', 'image must be a non-empty base64 string (or upload it as multipart/form-data)');
  let s = value;
  const m = /^data:[^;,]*(;[^,]*)?,/.exec(s);
  if (m) {
    if (!/;base64$/.test(m[1] ?? '')) throw bad('image', 'image data: URL must be base64 encoded');
    s = s.slice(m[0].length);
  }
  s = s.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(s) || s.length % 4 === 1) throw bad('image', 'image is not valid base64');
  // Decoded size without decoding: 3 bytes per 4 characters, minus padding.
  const approx = Math.floor((s.length * 3) / 4) - (s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0);
  if (approx > limit) throw tooLarge(limit);
  return Buffer.from(s, 'base64');
}

/** Reads the request body (JSON or multipart) without validating the fields yet. */
export async function readCaptionRequest(req: FastifyRequest, limit: number): Promise<RawCaptionRequest> {
  if (req.isMultipart()) {
    // No prototype: a field named like an Object.prototype member is just an unknown field.
    const fields: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    let image: Buffer | null = null;
    let imageName = 'image';
    try {
      for await (const part of req.parts({
        limits: { fileSize: limit, files: 1, fields: 32, fieldSize: 4096, parts: 40 },
      })) {
        if (part.type === 'file') {
          if (part.fieldname !== 'image') {
            await part.toBuffer().catch(() => undefined);
            throw bad(part.fieldname, `unexpected file field "${part.fieldname}" (send the image as "image")`);
          }
          image = await part.toBuffer();
          if (part.filename) imageName = part.filename;
        } else if (part.fieldname === 'image') {
          image = decodeBase64Image(part.value, limit);
        } else {
          fields[part.fieldname] = part.value;
        }
      }
    } catch (e) {
      if (e instanceof HttpError) throw e;
      const code = (e as { code?: string }).code;
      if (code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge(limit);
      if (code === 'FST_FILES_LIMIT') throw bad('image', 'send exactly one file, as the field "image"');
      if (code === 'FST_PARTS_LIMIT' || code === 'FST_FIELDS_LIMIT') throw new HttpError(400, 'too many form fields');
      throw new HttpError(400, `could not read the multipart form: ${(e as Error).message}`);
    }
    return { image, imageName, fields };
  }
  const body = req.body;
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'send multipart/form-data with an "image" file, or a JSON object with a base64 "image"');
  }
  const { image, ...fields } = body as Record<string, unknown>;
  if (image === undefined) return { image: null, imageName: 'image', fields };
  return { image: decodeBase64Image(image, limit), imageName: 'image', fields };
}

export interface ModelView {
  name: string;
  config: ModelConfig;
  tokenizer: Tokenizer;
  prompt: string | null;
  defaultSampler: string;
}

export interface CaptionRequest {
  model: ModelView;
  image: Buffer;
  imageName: string;
  sampler: string;
  steps: number;
  tokensPerStep: number;
  temperature: number;
  seed: number;
  threshold: number;
  prompt: number[];
  promptText: string;
  stream: boolean;
}

function intField(fields: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = fields[name];
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw bad(name, `${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

function numberField(
  fields: Record<string, unknown>,
  name: string,
  ok: (n: number) => boolean,
  range: string,
): number | undefined {
  const v = fields[name];
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n) || !ok(n)) throw bad(name, `${name} must be a number ${range}, got ${JSON.stringify(v)}`);
  return n;
}

function boolField(fields: Record<string, unknown>, name: string): boolean | undefined {
  const v = fields[name];
  if (v === undefined || v === null || v === '') return undefined;
  if (v === true || v === 'true' || v === '1' || v === 1) return true;
  if (v === false || v === 'false' || v === '0' || v === 0) return false;
  throw bad(name, `${name} must be true or false, got ${JSON.stringify(v)}`);
}

/** Validates every field against the chosen model. */
export function validateCaptionRequest(
  raw: RawCaptionRequest,
  models: ReadonlyMap<string, ModelView>,
  defaultModel: string,
): CaptionRequest {
  const f = raw.fields;
  const unknown = Object.keys(f).filter((k) => !(CAPTION_FIELDS as readonly string[]).includes(k));
  if (unknown.length > 0)
    throw bad(unknown[0]!, `unknown field "${unknown[0]}" (fields: image, ${CAPTION_FIELDS.join(', ')})`);

  const modelName = f.model === undefined || f.model === '' ? defaultModel : f.model;
  const model = typeof modelName === 'string' ? models.get(modelName) : undefined;
  if (!model)
    throw bad('model', `unknown model ${JSON.stringify(modelName)} (loaded: ${[...models.keys()].join(', ')})`);
  const L = model.config.responseLength;

  const sampler = f.sampler === undefined || f.sampler === '' ? model.defaultSampler : f.sampler;
  if (typeof sampler !== 'string' || !(SAMPLER_NAMES as readonly string[]).includes(sampler)) {
    throw bad('sampler', `unknown sampler ${JSON.stringify(sampler)} (choose one of: ${SAMPLER_NAMES.join(', ')})`);
  }

  const steps = stepsField(f, L);

  const temperature = numberField(f, 'temperature', (n) => n >= 0 && n <= 100, 'from 0 to 100') ?? 0;
  const seed = intField(f, 'seed', 0, 2 ** 32 - 1) ?? 0;
  const threshold = numberField(f, 'threshold', (n) => n > 0 && n <= 1, 'in (0, 1]') ?? 0.9;
  const stream = boolField(f, 'stream') ?? false;
  const allowUnk = boolField(f, 'allow_unk') ?? false;

  const { prompt, promptText } = promptField(f, model, allowUnk);

  if (!raw.image) throw bad('image', 'image is missing (a multipart file field "image", or base64 "image" in JSON)');
  return {
    model,
    image: raw.image,
    imageName: raw.imageName,
    sampler,
    steps,
    tokensPerStep: L / steps,
    temperature,
    seed,
    threshold,
    prompt,
    promptText,
    stream,
  };
}

/** Sampling steps from `steps` or `tokens_per_step` (default 4 tokens per step), which must divide the length L. */
function stepsField(f: Record<string, unknown>, L: number): number {
  const tps = intField(f, 'tokens_per_step', 1, L);
  const stepsGiven = intField(f, 'steps', 1, L);
  if (tps !== undefined && stepsGiven !== undefined)
    throw bad('tokens_per_step', 'give either tokens_per_step or steps, not both');
  if (stepsGiven !== undefined) return stepsGiven;
  const k = tps ?? 4;
  if (L % k !== 0) throw bad('tokens_per_step', `tokens_per_step ${k} must divide the generation length ${L}`);
  return stepsForTokensPerStep(L, k);
}

/**
 * The prompt (the model's training prompt unless given), encoded; words outside the vocabulary are a 400 unless
 * allowUnk.
 */
function promptField(
  f: Record<string, unknown>,
  model: ModelView,
  allowUnk: boolean,
): { prompt: number[]; promptText: string } {
  let promptText: string;
  if (f.prompt === undefined || f.prompt === '') {
    if (!model.prompt)
      throw bad('prompt', `model ${model.name} does not say which prompt it was trained with; pass prompt`);
    promptText = model.prompt;
  } else if (typeof f.prompt !== 'string' || f.prompt.length > 1000) {
    throw bad('prompt', 'prompt must be a string of at most 1000 characters');
  } else promptText = f.prompt;
  const outside = allowUnk ? [] : wordsOutsideVocabulary(model.tokenizer, promptText);
  if (outside.length > 0) {
    const shown =
      outside
        .slice(0, 8)
        .map((w) => JSON.stringify(w))
        .join(', ') + (outside.length > 8 ? ', ...' : '');
    throw bad(
      'prompt',
      `prompt has ${outside.length} word(s) outside model ${model.name}'s vocabulary: ${shown} (rephrase it, or send ` +
        `allow_unk=true to read them as [UNK])`,
    );
  }
  const prompt = model.tokenizer.encode(promptText);
  if (prompt.length === 0) throw bad('prompt', 'prompt has no tokens');
  if (prompt.length > model.config.promptLength)
    throw bad(
      'prompt',
      `prompt has ${prompt.length} tokens; model ${model.name} takes at most ${model.config.promptLength}`,
    );
  return { prompt, promptText };
}
