// `npx export-model --format onnx`: a checkpoint as one standard ONNX file (opset 17,
// dynamic batch, NHWC in and out as the TF.js export), lowered from the same stock-layer
// model the TF.js export saves, with the same weights and the same metadata (as
// metadata_props) that a consumer needs to prepare inputs and decide masks.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadWeightsFrom } from '../engine/model_io';
import { portableModel } from '../engine/portable';
import { applyWeights } from '../storage/checkpoint';
import { MARKER, publishDir } from '../storage/atomic_dir';
import { getModel } from '../models/registry';
import type { Resolved } from '../config/resolve';
import { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { encodeModel } from './onnx/proto';
import { lowerModel, ONNX_OPSET } from './onnx/lower';
import { exportMetadata } from './export_model';
import { packageInfo } from './web_app';
import { ONNX_FILE, ONNX_METADATA_KEY } from '../engine/onnx_runtime';

// The file name and metadata key are the runtime's (engine/onnx_runtime.ts reads them back), below deploy/.
export { ONNX_FILE, ONNX_METADATA_KEY } from '../engine/onnx_runtime';

/**
 * Refuses an output folder that exists and holds anything but an earlier ONNX export,
 * as checkOutputFolder does for the TF.js export. Returns the names it may replace.
 */
export function checkOnnxOutput(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`--output ${dir}: exists and is a file; expected a folder for the export`);
  const names = fs.readdirSync(dir);
  if (names.length === 0) return [];
  const other = names.filter((n) => n !== ONNX_FILE && n !== MARKER);
  if (!names.includes(ONNX_FILE) || other.length) throw new UserError(`--output ${dir}: exists and is not an earlier ONNX export (only ${ONNX_FILE}); refusing to overwrite it, choose another folder`);
  return names;
}

/** The ONNX model's bytes for the resolved run's network with the checkpoint's weights. */
export async function onnxBytes(parts: Resolved, checkpoint: string): Promise<Uint8Array> {
  const { cfg } = parts;
  const model = getModel(parts.model);
  const ck = await loadWeightsFrom(checkpoint);
  applyWeights(model, ck.weights, checkpoint);
  const portable = await portableModel(model, cfg.data.size, parts.model.definition);
  model.dispose();
  try {
    const meta = exportMetadata(cfg, checkpoint, ck.meta, null, parts.dataset);
    const pkg = packageInfo();
    // The JSON under one key for programs; the input facts also flat, for people reading it in Netron.
    const flat: Record<string, string> = {
      input_size: JSON.stringify(meta.input.size),
      input_layout: 'NHWC',
      normalize: meta.input.normalize,
      scale: String(meta.input.scale),
      mean: JSON.stringify(meta.input.mean),
      std: JSON.stringify(meta.input.std),
      output_activation: meta.output.activation,
      class_names: JSON.stringify(meta.class_names),
    };
    return encodeModel({
      opset: ONNX_OPSET,
      producer: { name: pkg.name, version: pkg.version },
      graph: lowerModel(portable),
      metadata: { [ONNX_METADATA_KEY]: JSON.stringify(meta), ...flat },
      doc: `${cfg.model.name} from ${pkg.name}: input image [batch, H, W, C] prepared as metadata '${ONNX_METADATA_KEY}'.input says, output logits [batch, H, W, K]`,
    });
  } finally {
    portable.dispose();
  }
}

export async function exportOnnx(parts: Resolved, opts: { checkpoint: string; output: string }): Promise<{ output: string; files: { name: string; bytes: number }[]; modelBytes: number }> {
  const replaceable = checkOnnxOutput(opts.output);
  const bytes = await onnxBytes(parts, opts.checkpoint);
  await publishDir(opts.output, async (w) => {
    await w.write(ONNX_FILE, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }, replaceable, { what: 'export', setting: '--output' });
  return { output: opts.output, files: [{ name: ONNX_FILE, bytes: bytes.length }], modelBytes: bytes.length };
}

export const selfTest: SelfTest = {
  'a folder holding anything but an earlier ONNX export is refused'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-'));
    assert.deepEqual(checkOnnxOutput(dir), []);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'keep me');
    assert.throws(() => checkOnnxOutput(dir), (e: Error) => e instanceof UserError && /is not an earlier ONNX export/.test(e.message));
    fs.rmSync(path.join(dir, 'notes.txt'));
    fs.writeFileSync(path.join(dir, ONNX_FILE), '');
    assert.deepEqual(checkOnnxOutput(dir), [ONNX_FILE]);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
