import type { Command } from 'commander';
import { shipCheckpoint } from '../../model/export.js';

/** A model for shipping: weights without optimizer state, plus the standalone ONNX graphs. */
export function registerExport(program: Command): void {
  program
    .command('export')
    .description('write a checkpoint for shipping: weights, config, tokenizer, and standalone ONNX graphs (onnx/)')
    .requiredOption('--checkpoint <dir>', 'trained checkpoint')
    .requiredOption('--out <dir>', 'directory to write')
    .option('--tokenizer <file>', "the tokenizer.json the model was trained with (checked against the checkpoint's)")
    .action(async (f: { checkpoint: string; out: string; tokenizer?: string }) => {
      await shipCheckpoint(f.checkpoint, f.out, {}, { tokenizer: f.tokenizer });
      console.log(
        `exported ${f.checkpoint} -> ${f.out} (checkpoint + onnx/vision.onnx, onnx/language.onnx, onnx/model.json)`,
      );
    });
}
