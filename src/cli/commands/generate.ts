import type { Command } from 'commander';
import { loadImage } from '../../data/image.js';
import { loadModel } from '../../model/io.js';
import { captionImages } from '../../sampling/caption.js';
import { validateSamplerOptions } from '../../sampling/sampler.js';
import { renderTrace } from '../../sampling/trace.js';
import { UserError } from '../../util/errors.js';
import { resolveCheckpoint } from '../models.js';
import { addSamplingFlags, type SamplingFlags, samplerFromFlags } from './sampling-flags.js';

interface GenerateFlags extends SamplingFlags {
  image: string[];
  checkpoint?: string;
  tokenizer?: string;
  prompt?: string;
  trace?: boolean;
  json?: boolean;
  color: boolean;
}

export function registerGenerate(program: Command): void {
  const cmd = program
    .command('generate')
    .description('caption images with a trained model')
    .requiredOption('--image <paths...>', 'PNG, JPEG or WebP images')
    .option('--checkpoint <dir>', 'model checkpoint (default: the shipped ReDiff model)')
    .option('--tokenizer <file>', "the tokenizer.json the model was trained with (checked against the checkpoint's)")
    .option('--prompt <text>', 'prompt (default: the one the model was trained with)')
    .option('--trace', 'print the response after every step, marking committed and refined tokens')
    .option('--no-color', 'plain markers instead of colour in --trace output')
    .option('--json', 'print JSON lines');
  addSamplingFlags(cmd).action(async (f: GenerateFlags) => {
    const dir = resolveCheckpoint(f.checkpoint, 'rediff');
    const model = await loadModel(dir, { tokenizer: f.tokenizer });
    try {
      const c = model.config;
      const opts = { ...samplerFromFlags(f, c.responseLength), trace: Boolean(f.trace) };
      validateSamplerOptions(opts, c.responseLength);
      const promptText = f.prompt ?? model.meta.prompt ?? '';
      const prompt = model.tokenizer.encode(promptText);
      if (prompt.length === 0) throw new UserError('the prompt is empty; pass --prompt');
      const images: Float32Array[] = [];
      for (const p of f.image) images.push(await loadImage(p, c.imageSize));
      const captions = await captionImages(model, images, prompt, opts);
      captions.forEach((cap, i) => {
        if (f.json) {
          console.log(
            JSON.stringify({
              image: f.image[i],
              caption: cap.text,
              steps: cap.steps,
              tokensPerStep: +(c.responseLength / opts.steps).toFixed(3),
              ...(f.trace ? { trace: cap.trace } : {}),
            }),
          );
          return;
        }
        if (f.trace) {
          console.log(`${f.image[i]}:`);
          for (const line of renderTrace(
            cap.trace!,
            c.responseLength,
            model.tokenizer,
            f.color && process.stdout.isTTY === true,
          ))
            console.log(`  ${line}`);
        }
        console.log(`${f.image[i]}: ${cap.text}`);
      });
    } finally {
      await model.dispose();
    }
  });
}
