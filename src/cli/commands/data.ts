import type { Command } from 'commander';
import { makeSplit, readSplit } from '../../data/benchmark-split.js';
import { hallucinationPair } from '../../data/training-data.js';
import { presetConfig } from '../../model/config.js';
import { readTokenizerFile } from '../../tokenizer/file.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { createProgress } from '../../util/progress.js';
import { intOption } from '../options.js';

interface MakeFlags {
  split: string;
  n: number;
  seed: number;
  out: string;
  imageSize: number;
  captions: number;
  hallucinations: number;
  minObjects: number;
  maxObjects: number;
  overwrite?: boolean;
  tokenizer?: string;
  progress: boolean;
}

/** How the split's text reads in a tokenizer's tokens: caption lengths, and what a model could not learn from. */
async function tokenReport(dir: string, tokenizer: Tokenizer, file: string): Promise<string> {
  const { records } = await readSplit(dir, { vocabulary: null, checkImages: false });
  const room = presetConfig('tiny', tokenizer.size).responseLength - 1;
  const lengths = records.flatMap((r) => r.captions.map((c) => tokenizer.encode(c).length));
  const pairs = records.flatMap((r) => r.hallucinations);
  const unpaired = pairs.filter((h) => hallucinationPair(h, tokenizer) === null).length;
  const mean = lengths.reduce((a, b) => a + b, 0) / Math.max(1, lengths.length);
  return (
    `in ${file}'s tokens: captions ${Math.min(...lengths)}-${Math.max(...lengths)} (mean ${mean.toFixed(1)}), ` +
    `${lengths.filter((n) => n > room).length} longer than the ${room} a model writes before its EOS; ${unpaired} ` +
    `of ${pairs.length} hallucination pairs change the token count (training drops them)`
  );
}

export function registerData(program: Command): void {
  const data = program.command('data').description('the grounded captioning benchmark: make splits');
  data
    .command('make')
    .description('write a benchmark split: PNG images plus data.jsonl (scene graph, captions, hallucination pairs)')
    .requiredOption('--split <name>', 'train, val, test (or another name: its own seed block)')
    .requiredOption('--out <dir>', 'directory to write')
    .option('--n <n>', 'number of scenes', intOption('--n'), 1000)
    .option('--seed <n>', 'seed', intOption('--seed', 0), 0)
    .option('--image-size <px>', 'image side in pixels', intOption('--image-size', 8, 1024), 64)
    .option('--captions <n>', 'correct captions (paraphrases) per scene', intOption('--captions', 1, 20), 3)
    .option('--hallucinations <n>', 'hallucination pairs per scene', intOption('--hallucinations', 0, 20), 2)
    .option('--min-objects <n>', 'fewest objects in a scene', intOption('--min-objects', 1, 9), 1)
    .option('--max-objects <n>', 'most objects in a scene', intOption('--max-objects', 1, 9), 6)
    .option('--overwrite', 'replace an existing split in --out')
    .option('--tokenizer <file>', 'a Hugging Face tokenizer.json: also report how the captions read in its tokens')
    .option('--no-progress', 'no progress bar')
    .action(async (f: MakeFlags) => {
      // Read first, so that a bad tokenizer stops the command before anything is written.
      const tokenizer = f.tokenizer ? await readTokenizerFile(f.tokenizer) : null;
      const bar = createProgress(`data ${f.split}`, f.n, { enabled: f.progress });
      const res = await makeSplit({
        split: f.split,
        n: f.n,
        seed: f.seed,
        out: f.out,
        imageSize: f.imageSize,
        captionsPerScene: f.captions,
        hallucinationsPerScene: f.hallucinations,
        minObjects: f.minObjects,
        maxObjects: f.maxObjects,
        overwrite: Boolean(f.overwrite),
        onProgress: (d) => bar.update(d),
      });
      bar.stop();
      const types = Object.entries(res.hallucinationTypes)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      console.log(
        `${res.dir}: ${res.scenes} scenes, ${res.captions} captions, ${res.hallucinations} hallucination pairs ` +
          `(${types}) in ${(res.ms / 1000).toFixed(1)} s`,
      );
      if (tokenizer) console.log(await tokenReport(res.dir, tokenizer, f.tokenizer!));
    });
}
