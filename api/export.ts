// exportModel(): what `npx export-model` does, returning the files written.
import path from 'node:path';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { defaultCheckpoint, useCheckpointDefinition } from '../engine/model_io';
import { checkOutputFolder, exportModel as writeExport, parseQuantization } from '../deploy/export_model';
import { checkOnnxOutput, exportOnnx } from '../deploy/onnx_export';
import { resolveRun } from '../config/resolve';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { checkArgs, CommonOptions, ConfigSource, libraryCall, OPTION_KINDS as K, prepare } from './options';

export interface ExportOptions extends CommonOptions {
  /** Checkpoint folder (default: <ckpt_root>/<name>/best, else last). */
  checkpoint?: string;
  /** Output folder (default: <results.root>/<name>/export); an earlier export is replaced, anything else refused. */
  output?: string;
  /** Also write the static web app. */
  web?: boolean;
  /** Store weights as uint8 or float16. */
  quantize?: 'uint8' | 'float16' | 'none';
  /** 'tfjs' (model.json + shards, the default) or 'onnx' (one model.onnx, opset 17). */
  format?: 'tfjs' | 'onnx';
}

/** What an export wrote (deploy/export_model.ts's result, declared here so the library's types stay small). */
export interface ExportResult {
  output: string;
  files: { name: string; bytes: number }[];
  /** model.json plus weight shards. */
  modelBytes: number;
}

export async function exportModel(config: ConfigSource, o: ExportOptions = {}): Promise<ExportResult & { checkpoint: string }> {
  return libraryCall(o, () => run(config, o));
}

async function run(config: ConfigSource, o: ExportOptions): Promise<ExportResult & { checkpoint: string }> {
  // quantize's value is parseQuantization's to check (its message lists the choices).
  checkArgs('exportModel', config, o, { checkpoint: K.path, output: K.path, web: K.bool, quantize: [z.string(), 'uint8, float16 or none'], format: [z.string(), 'tfjs or onnx'] });
  const quantize = parseQuantization(o.quantize); // cheap checks before the backend starts
  const format = o.format ?? 'tfjs';
  if (format !== 'tfjs' && format !== 'onnx') throw new UserError(`--format ${format}: unknown export format; expected tfjs or onnx`);
  // ONNX weights stay float32: ONNX's quantised form is QDQ nodes, not TF.js's weight shards.
  if (format === 'onnx' && quantize) throw new UserError(`--quantize ${quantize}: not with --format onnx (the ONNX export is float32; quantise it with onnxruntime.quantization)`);
  if (format === 'onnx' && o.web) throw new UserError('--web: not with --format onnx (the web app runs the TF.js export)');
  const { cfg } = await prepare(config, o);
  const output = o.output ?? path.join(cfg.results.root, cfg.name, format === 'onnx' ? 'export_onnx' : 'export');
  if (format === 'onnx') checkOnnxOutput(output);
  else checkOutputFolder(output);
  const checkpoint = o.checkpoint ?? defaultCheckpoint(cfg);
  useCheckpointDefinition(cfg, checkpoint); // the network the weights were trained as
  const parts = resolveRun(cfg); // after the checkpoint's definition is adopted
  if (format === 'onnx') return { ...(await exportOnnx(parts, { checkpoint, output })), checkpoint };
  return { ...(await writeExport(parts, { checkpoint, output, web: o.web, quantize })), checkpoint };
}

export const selfTest: SelfTest = {
  async 'an unknown quantisation is refused first'() {
    await assert.rejects(exportModel({}, { quantize: 'int4' as 'uint8' }), /UserError: quantize int4: unknown quantisation/); // in the library's terms
  },
};

runIfMain(module, selfTest);
