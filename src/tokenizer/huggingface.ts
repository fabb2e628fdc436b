/**
 * A Hugging Face `tokenizer.json` (BPE, WordPiece, Unigram, WordLevel ...) behind rediff's
 * Tokenizer interface, for users who bring their own text data. Tokenization itself is done by
 * @huggingface/tokenizers (pure JS).
 *
 * Ids are renumbered to rediff's layout (./tokenizer.ts): PAD = 0, MASK = 1, EOS = 2, UNK = 3,
 * then the tokenizer's other special tokens, then every ordinary token in the original id order.
 * The model only ever sees rediff ids; `hfId`/`fromHfId` convert when needed.
 *
 * Special tokens: MASK and EOS are required. Each is taken from, in order: the constructor
 * option, tokenizer_config.json (`mask_token`, `eos_token`), then common names
 * (MASK_CANDIDATES, EOS_CANDIDATES). PAD and UNK are looked up the same way; when the tokenizer
 * has none (byte-level BPEs have no UNK; many have no PAD), or it is the same token as another
 * special, a "virtual" token is added that exists only in rediff's id space (decode drops PAD
 * and shows UNK as "[UNK]").
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { UserError } from '../util/errors.js';
import { readJsonFile } from '../util/atomic.js';
import { EOS_ID, MASK_ID, PAD_ID, type Tokenizer, UNK_ID } from './tokenizer.js';

export const MASK_CANDIDATES: readonly string[] = ['<|mdm_mask|>', '[MASK]', '<mask>', '<|mask|>', '<MASK>'];
export const EOS_CANDIDATES: readonly string[] = [
  '<|eot_id|>',
  '<|endoftext|>',
  '</s>',
  '<|im_end|>',
  '<|end_of_text|>',
  '<eos>',
  '[EOS]',
  '<|eos|>',
  '[SEP]',
];
export const PAD_CANDIDATES: readonly string[] = ['[PAD]', '<pad>', '<|pad|>', '<|padding|>', '<PAD>'];
export const UNK_CANDIDATES: readonly string[] = ['[UNK]', '<unk>', '<|unk|>', '<UNK>'];

type Role = 'mask' | 'eos' | 'pad' | 'unk';

export interface HuggingFaceTokenizerOptions {
  /** Token to use as [MASK] (must exist). Default: config mask_token, then MASK_CANDIDATES. */
  mask?: string;
  /** Token that ends a response and pads it (must exist). Default: config eos_token, then EOS_CANDIDATES. */
  eos?: string;
  /** Padding token; null forces a virtual one. Default: config pad_token, then PAD_CANDIDATES, else virtual. */
  pad?: string | null;
  /** Unknown token; null forces a virtual one. Default: config unk_token, then UNK_CANDIDATES, else virtual. */
  unk?: string | null;
  /** Content of tokenizer_config.json, if any (supplies default special tokens, cleanup flags). */
  config?: unknown;
  /** Names the source in error messages. */
  where?: string;
}

/** The special tokens chosen; null = virtual (no counterpart in the Hugging Face vocabulary). */
export interface HuggingFaceSpecials {
  mask: string;
  eos: string;
  pad: string | null;
  unk: string | null;
}

export interface HuggingFaceTokenizerJSON {
  kind: 'huggingface';
  /** The tokenizer.json content, unchanged. */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json content ({} when there was none). */
  config: Record<string, unknown>;
  specials: HuggingFaceSpecials;
}

const VIRTUAL_NAMES: Record<'pad' | 'unk', string> = { pad: '[PAD]', unk: '[UNK]' };

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** tokenizer_config.json stores a token as a string or as {content: string, ...}. */
function configToken(config: Record<string, unknown>, key: string): string | undefined {
  const v = config[key];
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

export class HuggingFaceTokenizer implements Tokenizer {
  readonly specials: HuggingFaceSpecials;
  readonly size: number;
  readonly firstOrdinaryId: number;
  private readonly hf: HfTokenizer;
  private readonly source: Record<string, unknown>;
  private readonly config: Record<string, unknown>;
  /** rediff id -> Hugging Face id (-1 for a virtual token). */
  private readonly toHf: Int32Array;
  /** Hugging Face id -> rediff id (-1 for an id with no token). */
  private readonly fromHf: Int32Array;

  constructor(tokenizerJson: unknown, opts: HuggingFaceTokenizerOptions = {}) {
    const where = opts.where ?? 'tokenizer.json';
    if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) {
      throw new UserError(`${where}: not a Hugging Face tokenizer.json (no "model" object)`);
    }
    if (opts.config !== undefined && !isObject(opts.config))
      throw new UserError(`${where}: tokenizer_config.json is not a JSON object`);
    this.source = structuredClone(tokenizerJson);
    this.config = structuredClone((opts.config as Record<string, unknown> | undefined) ?? {});

    // The library requires these keys to be present (null allowed) and an added_tokens array.
    const prepared: Record<string, unknown> = structuredClone(tokenizerJson);
    for (const k of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder'])
      if (!(k in prepared)) prepared[k] = null;
    if (!Array.isArray(prepared.added_tokens)) prepared.added_tokens = [];
    const model = prepared.model as Record<string, unknown>;
    const libConfig: Record<string, unknown> = { ...this.config };
    // WordLevel models take their unknown token from the config in this library.
    if (libConfig.unk_token === undefined && typeof model.unk_token === 'string') libConfig.unk_token = model.unk_token;
    try {
      this.hf = new HfTokenizer(prepared, libConfig);
    } catch (err) {
      throw new UserError(
        `${where}: cannot load the tokenizer (${String((err as Error)?.message ?? err).split('\n')[0]})`,
      );
    }

    const hfModel = this.hf.model;
    if (!hfModel) throw new UserError(`${where}: the tokenizer has no model`);
    const hfVocab = hfModel.vocab;
    const hfSize = hfVocab.length;
    const exists = (tok: string): boolean => this.hf.token_to_id(tok) !== undefined;

    const resolve = (
      role: Role,
      given: string | null | undefined,
      candidates: readonly string[],
      required: boolean,
    ): string | null => {
      if (given === null) {
        if (required) throw new UserError(`${where}: a ${role} token is required`);
        return null;
      }
      if (given !== undefined) {
        if (!exists(given))
          throw new UserError(`${where}: the ${role} token ${JSON.stringify(given)} is not in the vocabulary`);
        return given;
      }
      const fromConfig = configToken(this.config, `${role}_token`);
      if (fromConfig !== undefined && exists(fromConfig)) return fromConfig;
      const found = candidates.find(exists);
      if (found !== undefined) return found;
      if (required) {
        throw new UserError(
          `${where}: no ${role} token found (tried ` +
            `${[...(fromConfig ? [fromConfig] : []), ...candidates].join(' ')}); name it with the "${role}" ` +
            `tokenizer option`,
        );
      }
      return null;
    };
    const mask = resolve('mask', opts.mask, MASK_CANDIDATES, true)!;
    const eos = resolve('eos', opts.eos, EOS_CANDIDATES, true)!;
    if (mask === eos)
      throw new UserError(`${where}: the mask and eos tokens must differ (both ${JSON.stringify(mask)})`);
    let pad = resolve('pad', opts.pad, PAD_CANDIDATES, false);
    if (pad === mask || pad === eos) pad = null;
    let unk = resolve('unk', opts.unk, UNK_CANDIDATES, false);
    if (unk === mask || unk === eos || unk === pad) unk = null;
    this.specials = { mask, eos, pad, unk };

    const idOf = (tok: string | null): number => (tok === null ? -1 : this.hf.token_to_id(tok)!);
    const head = [idOf(pad), idOf(mask), idOf(eos), idOf(unk)]; // PAD_ID, MASK_ID, EOS_ID, UNK_ID
    const used = new Set(head.filter((i) => i >= 0));
    const specialHf: number[] = [];
    for (const [id, t] of this.hf.get_added_tokens_decoder())
      if (t.special && !used.has(id) && id < hfSize) specialHf.push(id);
    specialHf.sort((a, b) => a - b);
    for (const id of specialHf) used.add(id);
    const ordinaryHf: number[] = [];
    for (let id = 0; id < hfSize; id++) if (hfVocab[id] !== undefined && !used.has(id)) ordinaryHf.push(id);

    const order = [...head, ...specialHf, ...ordinaryHf];
    this.size = order.length;
    this.firstOrdinaryId = head.length + specialHf.length;
    this.toHf = Int32Array.from(order);
    this.fromHf = new Int32Array(hfSize).fill(-1);
    order.forEach((hfId, rid) => {
      if (hfId >= 0) this.fromHf[hfId] = rid;
    });
  }

  /**
   * Loads `tokenizer.json` (a path to the file, or to a directory holding it) and, when present
   * beside it, `tokenizer_config.json`.
   */
  static async load(
    file: string,
    opts: Omit<HuggingFaceTokenizerOptions, 'config' | 'where'> = {},
  ): Promise<HuggingFaceTokenizer> {
    let jsonPath = file;
    try {
      if ((await fs.stat(file)).isDirectory()) jsonPath = path.join(file, 'tokenizer.json');
    } catch {
      throw new UserError(`tokenizer not found: ${file}`);
    }
    const json = await readJsonFile(jsonPath, 'tokenizer');
    const configPath = path.join(path.dirname(jsonPath), 'tokenizer_config.json');
    let config: unknown;
    try {
      await fs.access(configPath);
      config = await readJsonFile(configPath, 'tokenizer config');
    } catch (err) {
      if (err instanceof UserError) throw err;
    }
    return new HuggingFaceTokenizer(json, { ...opts, config, where: jsonPath });
  }

  static fromJSON(json: unknown, where = 'tokenizer'): HuggingFaceTokenizer {
    const j = json as Partial<HuggingFaceTokenizerJSON> | null;
    if (!isObject(j) || j.kind !== 'huggingface' || !isObject(j.tokenizer) || !isObject(j.specials)) {
      throw new UserError(
        `${where}: not a stored Hugging Face tokenizer (expected {kind: "huggingface", tokenizer, specials})`,
      );
    }
    const s = j.specials;
    const nameOrNull = (v: unknown): string | null => (typeof v === 'string' ? v : null);
    if (typeof s.mask !== 'string' || typeof s.eos !== 'string')
      throw new UserError(`${where}: stored tokenizer lacks its mask/eos tokens`);
    return new HuggingFaceTokenizer(j.tokenizer, {
      mask: s.mask,
      eos: s.eos,
      pad: nameOrNull(s.pad),
      unk: nameOrNull(s.unk),
      config: isObject(j.config) ? j.config : {},
      where,
    });
  }

  toJSON(): HuggingFaceTokenizerJSON {
    return {
      kind: 'huggingface',
      tokenizer: structuredClone(this.source),
      config: structuredClone(this.config),
      specials: { ...this.specials },
    };
  }

  isSpecial(id: number): boolean {
    return id < this.firstOrdinaryId;
  }

  /** The Hugging Face id of a rediff id (-1 for a virtual token or an id out of range). */
  hfId(id: number): number {
    return Number.isInteger(id) && id >= 0 && id < this.size ? this.toHf[id]! : -1;
  }

  /** The rediff id of a Hugging Face id (UNK for an id without a token). */
  fromHfId(hfId: number): number {
    const r = Number.isInteger(hfId) && hfId >= 0 && hfId < this.fromHf.length ? this.fromHf[hfId]! : -1;
    return r >= 0 ? r : UNK_ID;
  }

  idOf(token: string): number | undefined {
    const h = this.hf.token_to_id(token);
    if (h !== undefined) {
      const r = this.fromHf[h];
      return r !== undefined && r >= 0 ? r : undefined;
    }
    if (this.specials.pad === null && token === VIRTUAL_NAMES.pad) return PAD_ID;
    if (this.specials.unk === null && token === VIRTUAL_NAMES.unk) return UNK_ID;
    return undefined;
  }

  /** Text -> rediff ids; no BOS/EOS or other template tokens are added. */
  encode(text: string): number[] {
    // Unknown pieces come back as undefined when the tokenizer has no unk token.
    const ids = this.hf.encode(text, { add_special_tokens: false }).ids as Array<number | undefined>;
    return ids.map((h) => (typeof h === 'number' ? this.fromHfId(h) : UNK_ID));
  }

  pieces(ids: readonly number[]): string[] {
    return ids.map((id) => {
      const h = this.hfId(id);
      if (h >= 0) return this.hf.id_to_token(h) ?? VIRTUAL_NAMES.unk;
      return id === PAD_ID ? VIRTUAL_NAMES.pad : VIRTUAL_NAMES.unk;
    });
  }

  /** Stops at the first EOS, drops PAD; masks stay visible as the mask token's text. */
  decode(ids: readonly number[]): string {
    const parts: string[] = [];
    let run: number[] = [];
    const flush = (): void => {
      if (run.length > 0) parts.push(this.hf.decode(run));
      run = [];
    };
    for (const id of ids) {
      if (id === EOS_ID) break;
      if (id === PAD_ID) continue;
      const h = this.hfId(id);
      if (h >= 0) run.push(h);
      else {
        flush();
        parts.push(VIRTUAL_NAMES.unk);
      }
    }
    flush();
    return parts.join(' ').trim();
  }

  /** The ids of the special roles (always the layout constants; here for symmetry). */
  get specialIds(): { pad: number; mask: number; eos: number; unk: number } {
    return { pad: PAD_ID, mask: MASK_ID, eos: EOS_ID, unk: UNK_ID };
  }
}
