import type { Command } from 'commander';
import { readCheckpointInfo } from '../../checkpoint/checkpoint.js';
import { modelConfigOf } from '../../model/io.js';
import { countParams } from '../../model/params.js';

export function registerInfo(program: Command): void {
  program
    .command('info')
    .description('describe a checkpoint: architecture, parameter count, training state')
    .argument('<checkpoint>', 'checkpoint directory')
    .option('--json', 'print JSON')
    .action(async (dir: string, opts: { json?: boolean }) => {
      const info = await readCheckpointInfo(dir);
      const config = modelConfigOf(info, dir);
      const summary = {
        checkpoint: dir,
        savedAt: info.savedAt,
        stage: info.state.stage ?? null,
        step: info.state.step ?? null,
        parameters: countParams(config),
        config,
        prompt: info.state.prompt ?? null,
        weightsBytes: info.files.weights.bytes,
        optimizerBytes: info.files.optimizer?.bytes ?? 0,
      };
      if (opts.json) {
        console.log(JSON.stringify(summary, null, 2));
        return;
      }
      const c = config;
      console.log(`checkpoint   ${dir} (saved ${info.savedAt})`);
      console.log(`stage        ${summary.stage ?? '-'} at step ${summary.step ?? '-'}`);
      console.log(`parameters   ${summary.parameters.toLocaleString('en-US')}`);
      console.log(
        `vision       ${c.imageSize}x${c.imageSize} image, ${c.patchSize}px patches, width ${c.vision.width}, ` +
          `${c.vision.layers} layers, ${c.vision.heads} heads, FF ${c.vision.ff}`,
      );
      console.log(
        `language     width ${c.lm.width}, ${c.lm.layers} layers, ${c.lm.heads} heads, FF ${c.lm.ff}, vocabulary ` +
          `${c.vocabSize}`,
      );
      console.log(`sequence     prompt ${c.promptLength} + response ${c.responseLength} tokens`);
      console.log(
        `files        weights ${(summary.weightsBytes / 1e6).toFixed(2)} MB, optimizer ` +
          `${(summary.optimizerBytes / 1e6).toFixed(2)} MB`,
      );
    });
}
