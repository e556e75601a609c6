// exportModel(): what `npx export-model` does, returning the files written.
import path from 'node:path';
import assert from 'node:assert/strict';
import { defaultCheckpoint, useCheckpointDefinition } from '../engine/model_io';
import { checkOutputFolder, exportModel as writeExport, ExportResult, parseQuantization } from '../deploy/export_model';
import { runIfMain, SelfTest } from '../utils/self_test';
import { CommonOptions, ConfigSource, prepare } from './options';

export interface ExportOptions extends CommonOptions {
  /** Checkpoint folder (default: <ckpt_root>/<name>/best, else last). */
  checkpoint?: string;
  /** Output folder (default: <results.root>/<name>/export); an earlier export is replaced, anything else refused. */
  output?: string;
  /** Also write the static web app. */
  web?: boolean;
  /** Store weights as uint8 or float16. */
  quantize?: 'uint8' | 'float16' | 'none';
}

export async function exportModel(config: ConfigSource, o: ExportOptions = {}): Promise<ExportResult & { checkpoint: string }> {
  const quantize = parseQuantization(o.quantize); // cheap checks before the backend starts
  const { cfg } = await prepare(config, o);
  const output = o.output ?? path.join(cfg.results.root, cfg.name, 'export');
  checkOutputFolder(output);
  const checkpoint = o.checkpoint ?? defaultCheckpoint(cfg);
  useCheckpointDefinition(cfg, checkpoint, o.quiet ? () => {} : undefined); // the network the weights were trained as
  return { ...(await writeExport(cfg, { checkpoint, output, web: o.web, quantize })), checkpoint };
}

export const selfTest: SelfTest = {
  async 'an unknown quantisation is refused first'() {
    await assert.rejects(exportModel({}, { quantize: 'int4' as 'uint8' }), /--quantize int4: unknown quantisation/);
  },
};

runIfMain(module, selfTest);
