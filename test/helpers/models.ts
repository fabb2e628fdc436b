import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../../src/benchmark/captioner.js';
import { presetConfig } from '../../src/model/config.js';
import { saveModel } from '../../src/model/io.js';
import { initParams } from '../../src/model/params.js';

/** Two untrained tiny checkpoints, "baseline" and "rediff", with fixed seeds (quality does not matter). */
export async function makeTinyModels(prefix: string): Promise<{ name: string; dir: string }[]> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const tokenizer = benchmarkTokenizer();
  const config = presetConfig('tiny', tokenizer.size);
  const out: { name: string; dir: string }[] = [];
  for (const [name, seed, stage] of [
    ['baseline', 1, 'mask-prediction'],
    ['rediff', 2, 'revision'],
  ] as const) {
    const dir = path.join(root, name);
    await saveModel(dir, {
      config,
      tokenizer,
      params: initParams(config, seed),
      state: { prompt: BENCHMARK_PROMPT, stage, step: 0 },
    });
    out.push({ name, dir });
  }
  return out;
}
