/** Sampler flags shared by generate, eval and serve. */
import { type Command, Option } from 'commander';
import {
  CACHE_MODES,
  type CacheMode,
  SAMPLER_NAMES,
  type SamplerOptions,
  samplerOptions,
} from '../../sampling/sampler.js';
import { stepsForTokensPerStep } from '../../sampling/caption.js';
import { UserError } from '../../util/errors.js';
import { choiceOption, floatOption, intOption } from '../options.js';

export interface SamplingFlags {
  sampler: string;
  steps?: number;
  tokensPerStep?: number;
  threshold: number;
  temperature: number;
  blockLength?: number;
  refineFrom: number;
  refineTop: number;
  remasking: 'low-confidence' | 'random';
  seed: number;
  cache: CacheMode;
}

export function addSamplingFlags(cmd: Command, { rates = true } = {}): Command {
  cmd
    .addOption(
      new Option('--sampler <name>', `sampler: ${SAMPLER_NAMES.join(', ')}`)
        .default('rediff')
        .argParser(choiceOption('--sampler', SAMPLER_NAMES)),
    )
    .option(
      '--threshold <p>',
      'confidence threshold of the threshold samplers',
      floatOption('--threshold', 0, 1, { exclusiveMin: true }),
      0.9,
    )
    .option('--temperature <t>', '0 = argmax, > 0 = Gumbel-max sampling', floatOption('--temperature', 0), 0)
    .option(
      '--block-length <n>',
      'semi-autoregressive block length (default: 32 where the steps split over its blocks, else the whole response)',
      intOption('--block-length'),
    )
    .option(
      '--refine-from <f>',
      'refine only from this fraction of the steps on',
      floatOption('--refine-from', 0, 1),
      0,
    )
    .option(
      '--refine-top <f>',
      'refine only the most confident fraction of decoded tokens',
      floatOption('--refine-top', 0, 1, { exclusiveMin: true }),
      1,
    )
    .addOption(
      new Option('--remasking <kind>', 'which masks to commit first')
        .choices(['low-confidence', 'random'])
        .default('low-confidence'),
    )
    .option('--seed <n>', 'sampling seed', intOption('--seed', 0), 0)
    .addOption(
      new Option(
        '--cache <mode>',
        'K/V cache within a block (Fast-dLLM, approximate): none, prefix (reuse image, prompt and finished blocks) ' +
          'or dual (also the later blocks)',
      )
        .default('none')
        .argParser(choiceOption('--cache', CACHE_MODES)),
    );
  if (rates) {
    cmd
      .option('--steps <n>', 'denoising steps for the whole response', intOption('--steps'))
      .option('--tokens-per-step <k>', 'tokens decoded per step (steps = length / k)', intOption('--tokens-per-step'));
  }
  return cmd;
}

/** Sampler options for a rate (steps or tokens per step), validated against the generation length. */
export function samplerFromFlags(f: SamplingFlags, length: number, tokensPerStep?: number): SamplerOptions {
  if (f.steps !== undefined && f.tokensPerStep !== undefined)
    throw new UserError('give either --steps or --tokens-per-step, not both');
  const k = tokensPerStep ?? f.tokensPerStep;
  const steps = f.steps ?? stepsForTokensPerStep(length, k ?? 4);
  const o = samplerOptions(
    f.sampler,
    {
      steps,
      temperature: f.temperature,
      seed: f.seed,
      remasking: f.remasking,
      cache: f.cache,
      ...(f.blockLength ? { blockLength: f.blockLength } : {}),
    },
    f.threshold,
  );
  if (o.refine) o.refine = { fromFraction: f.refineFrom, topFraction: f.refineTop };
  return o;
}
