/**
 * A tokenizer named on the command line (`--tokenizer FILE`): a Hugging Face tokenizer.json (or
 * the directory holding it), and the check that a checkpoint was trained with it.
 */
import type { Tokenizer } from './tokenizer.js';
import { HuggingFaceTokenizer } from './huggingface.js';
import { UserError } from '../util/errors.js';

/** Reads a Hugging Face tokenizer.json (with tokenizer_config.json beside it, when present). */
export function readTokenizerFile(file: string): Promise<HuggingFaceTokenizer> {
  return HuggingFaceTokenizer.load(file);
}

/** Two tokenizers are the same when every id names the same token (so a model reads both alike). */
export function sameTokenizer(a: Tokenizer, b: Tokenizer): boolean {
  if (a.size !== b.size || a.firstOrdinaryId !== b.firstOrdinaryId) return false;
  const ids = Array.from({ length: a.size }, (_, i) => i);
  const pa = a.pieces(ids);
  const pb = b.pieces(ids);
  return pa.every((p, i) => p === pb[i]);
}

/** Throws unless the checkpoint at `dir` has the tokenizer read from `file`. */
export async function checkTokenizerFile(file: string, stored: Tokenizer, dir: string): Promise<void> {
  const given = await readTokenizerFile(file);
  if (!sameTokenizer(given, stored)) {
    throw new UserError(
      `--tokenizer ${file}: ${dir} was trained with another tokenizer (${stored.size} tokens, ${given.size} in ` +
        `${file}); ` +
        'the checkpoint carries its own, so --tokenizer can be left out',
    );
  }
}
