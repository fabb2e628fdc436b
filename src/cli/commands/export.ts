import * as path from 'node:path';
import type { Command } from 'commander';
import { exportOnnx, writeOnnxExport } from '../../model/export.js';
import { loadModelState, saveModel } from '../../model/io.js';

/** A model for shipping: weights without optimizer state, plus the standalone ONNX graphs. */
export function registerExport(program: Command): void {
  program
    .command('export')
    .description('write a checkpoint for shipping: weights, config, tokenizer, and standalone ONNX graphs (onnx/)')
    .requiredOption('--checkpoint <dir>', 'trained checkpoint')
    .requiredOption('--out <dir>', 'directory to write')
    .action(async (f: { checkpoint: string; out: string }) => {
      const m = await loadModelState(f.checkpoint);
      const { settings: _settings, ...state } = m.state;
      await saveModel(f.out, { config: m.config, tokenizer: m.tokenizer, params: m.params, state: { ...state, exportedFrom: f.checkpoint } });
      const prompt = typeof m.state.prompt === 'string' ? m.state.prompt : undefined;
      const stage = typeof m.state.stage === 'string' ? m.state.stage : undefined;
      await writeOnnxExport(path.join(f.out, 'onnx'), exportOnnx({ config: m.config, tokenizer: m.tokenizer, params: m.params, meta: { prompt, stage } }));
      console.log(`exported ${f.checkpoint} -> ${f.out} (checkpoint + onnx/vision.onnx, onnx/language.onnx, onnx/model.json)`);
    });
}
