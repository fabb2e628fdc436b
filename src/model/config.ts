/**
 * Model architecture: LLaDA-V layout at a small scale. A ViT vision encoder, a 2-layer MLP
 * projector into the language model's width, and a bidirectional transformer over
 * [image tokens, prompt tokens, response tokens] predicting every response position.
 */
import { UserError } from '../util/errors.js';

export interface TransformerConfig {
  width: number;
  layers: number;
  heads: number;
  ff: number;
}

export interface ModelConfig {
  vocabSize: number;
  imageSize: number;
  patchSize: number;
  vision: TransformerConfig;
  lm: TransformerConfig;
  /** Prompt tokens, left-padded with [PAD] (masked out of attention) to this length. */
  promptLength: number;
  /** Response (generation) length L; responses are padded with EOS to it. */
  responseLength: number;
  /**
   * The vision tower carries a per-cell probe head (`probe.cells.*`): what is in each cell of
   * the scene's 3x3 grid. Trained by the `vision` stage (our stand-in for SigLIP's
   * pretraining) and kept afterwards so any later checkpoint can be asked whether it still sees.
   */
  cellProbe?: boolean;
  /**
   * What an object in a grid cell is made of: the number of values of each factor (the
   * benchmark's shapes, colours and sizes, [8, 8, 2], the default). A cell's class is 0 when it
   * is empty, else 1 + its object's factor values in mixed radix, the last factor fastest (the
   * numbering of src/benchmark/cells.ts). The probe head predicts these classes; imageCells
   * embeds their factors.
   */
  cellFactors?: number[];
  /**
   * Image tokens are centred over the image (each token minus the image's mean token) and
   * LayerNormed without a bias before the language model sees them: no constant part the
   * language model could turn into an attention sink, so what differs between places is all
   * there is (docs/design.md#image-normalisation).
   */
  imageNorm?: boolean;
  /**
   * Each normalised image token also gets a learned embedding of its cell, initialised at the
   * content's own (unit) scale: the language model's position rows (0.02) are too small beside
   * normalised content for it to tell which cell a token came from (docs/design.md#image-place-and-cell-reading).
   * Needs imageNorm.
   */
  imagePlace?: boolean;
  /**
   * Each image token also carries the tower's own reading of its cell: the probe head's
   * distribution over cell classes, summed into empty / shape / colour / size and embedded by a
   * learned table (`projector.cells`). A language model trained from scratch learned to read
   * colour from the projected features but not shape (docs/design.md#image-place-and-cell-reading). Needs cellProbe.
   */
  imageCells?: boolean;
  /**
   * Added to the attention logit of every image key, so an image token weighs as e^b text
   * tokens. In LLaDA-V the image tokens (729 per crop) outnumber the text and draw most of the
   * attention of an untrained language model; here 9 image tokens sit among 104 text tokens and
   * draw 8% of it, and the model was slow to start reading them (docs/design.md#image-key-bias).
   */
  imageKeyBias?: number;
  /**
   * Learned relative position bias (T5's), the largest offset R with its own value: every
   * attention head of every language-model layer adds a learned scalar for the offset between a
   * text query and a text key (clipped to +-R), and one more for every pair with an image token.
   * It starts as ALiBi (minus a per-head slope times the distance; params.ts `distancePenalty`).
   * LLaDA uses relative positions (RoPE); with absolute position rows alone, a place word barely
   * attended to the object named three words before it (docs/design.md#relative-position-bias).
   */
  relativeBias?: number;
}

export const PRESETS = {
  /** For tests: trains in seconds. */
  tiny: {
    imageSize: 64,
    patchSize: 16,
    vision: { width: 32, layers: 1, heads: 2, ff: 64 },
    lm: { width: 64, layers: 2, heads: 2, ff: 128 },
    promptLength: 8,
    responseLength: 96,
  },
  /**
   * The default for real runs on a 2-core CPU. 48 px cut into 16 px patches gives one image
   * token per cell of the scene's 3x3 grid (docs/design.md#grid-aligned-image-patches: an unaligned 8x8 patch grid
   * made binding words to image tokens much slower to learn), and 9 instead of 64 image tokens
   * make every step cheaper.
   */
  small: {
    imageSize: 48,
    patchSize: 16,
    vision: { width: 96, layers: 2, heads: 4, ff: 256 },
    lm: { width: 128, layers: 4, heads: 4, ff: 512 },
    promptLength: 8,
    responseLength: 96,
  },
  /** A larger model for longer runs. */
  base: {
    imageSize: 64,
    patchSize: 8,
    vision: { width: 128, layers: 3, heads: 4, ff: 512 },
    lm: { width: 256, layers: 6, heads: 8, ff: 1024 },
    promptLength: 8,
    responseLength: 96,
  },
} satisfies Record<string, Omit<ModelConfig, 'vocabSize'>>;

export type PresetName = keyof typeof PRESETS;
export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

export function presetConfig(name: string, vocabSize: number, overrides: Partial<ModelConfig> = {}): ModelConfig {
  if (!(name in PRESETS))
    throw new UserError(`unknown model preset "${name}" (choose one of: ${PRESET_NAMES.join(', ')})`);
  const cfg: ModelConfig = { ...structuredClone(PRESETS[name as PresetName]), vocabSize, ...overrides };
  validateConfig(cfg);
  return cfg;
}

export function validateConfig(c: ModelConfig): void {
  const bad = (msg: string): never => {
    throw new UserError(`invalid model config: ${msg}`);
  };
  if (c.imageSize % c.patchSize !== 0) bad(`imageSize ${c.imageSize} is not a multiple of patchSize ${c.patchSize}`);
  for (const [name, t] of [
    ['vision', c.vision],
    ['lm', c.lm],
  ] as const) {
    if (t.width % t.heads !== 0) bad(`${name}.width ${t.width} is not a multiple of ${name}.heads ${t.heads}`);
    if (t.layers < 1) bad(`${name}.layers must be >= 1`);
  }
  if (c.responseLength < 1 || c.promptLength < 1) bad('promptLength and responseLength must be >= 1');
  if (c.vocabSize < 5) bad('vocabSize too small');
  if (c.imageCells && !c.cellProbe)
    bad("imageCells needs cellProbe (the image tokens carry the probe head's reading of each cell)");
  if (c.imageKeyBias !== undefined && !(Number.isFinite(c.imageKeyBias) && Math.abs(c.imageKeyBias) <= 20))
    bad(`imageKeyBias must be a number in [-20, 20], got ${c.imageKeyBias}`);
  if (
    c.relativeBias !== undefined &&
    !(Number.isInteger(c.relativeBias) && c.relativeBias >= 1 && c.relativeBias <= 64)
  )
    bad(`relativeBias must be an integer in [1, 64], got ${c.relativeBias}`);
  if (
    c.cellFactors !== undefined &&
    !(c.cellFactors.length > 0 && c.cellFactors.every((n) => Number.isInteger(n) && n >= 1))
  )
    bad(`cellFactors must be a list of positive integers, got ${JSON.stringify(c.cellFactors)}`);
  if (c.imagePlace && !c.imageNorm)
    bad('imagePlace needs imageNorm (the place embedding is sized for normalised image tokens)');
}

/** The benchmark's shapes, colours and sizes: the grid of every checkpoint made before the config carried it. */
export const DEFAULT_CELL_FACTORS: readonly number[] = [8, 8, 2];
const cellFactorsOf = (c: ModelConfig): readonly number[] => c.cellFactors ?? DEFAULT_CELL_FACTORS;
/** Classes the probe head predicts per cell: empty, then every combination of the factors. */
export const cellClasses = (c: ModelConfig): number => 1 + cellFactorsOf(c).reduce((a, b) => a * b, 1);
/** Columns of the cell factor matrix: empty, then each value of each factor. */
export const cellFactorColumns = (c: ModelConfig): number => 1 + cellFactorsOf(c).reduce((a, b) => a + b, 0);

/**
 * [cellClasses x cellFactorColumns], row-major: 1 where a class has a factor value. A
 * distribution over classes times this matrix is the distribution of each factor.
 */
export function cellFactorMatrix(c: ModelConfig): Float32Array {
  const factors = cellFactorsOf(c);
  const columns = cellFactorColumns(c);
  const m = new Float32Array(cellClasses(c) * columns);
  m[0] = 1;
  for (let cls = 1; cls < cellClasses(c); cls++) {
    let rest = cls - 1;
    let column = columns;
    for (let f = factors.length - 1; f >= 0; f--) {
      column -= factors[f]!;
      m[cls * columns + column + (rest % factors[f]!)] = 1;
      rest = Math.floor(rest / factors[f]!);
    }
  }
  return m;
}

export const numPatches = (c: ModelConfig): number => (c.imageSize / c.patchSize) ** 2;
export const patchDim = (c: ModelConfig): number => c.patchSize * c.patchSize * 3;
/** Full sequence length seen by the language model. */
export const sequenceLength = (c: ModelConfig): number => numPatches(c) + c.promptLength + c.responseLength;

/**
 * Buckets of the relative position bias: offsets -R..R between text positions, then one for pairs with an image token.
 */
export const relativeBuckets = (c: ModelConfig): number => 2 * (c.relativeBias ?? 0) + 2;

/** The relative-bias bucket of a (query, key) pair of sequence positions (ModelConfig.relativeBias). */
export function relativeBucket(c: ModelConfig, query: number, key: number): number {
  const r = c.relativeBias ?? 0;
  if (query < numPatches(c) || key < numPatches(c)) return 2 * r + 1;
  return Math.max(-r, Math.min(r, key - query)) + r;
}
