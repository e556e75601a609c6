// Building a model from the config and loading a checkpoint's weights into it.
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { getModel } from '../models';
import { Config } from './config';
import { UserError } from './errors';
import { applyWeights, checkpointExists, loadCheckpoint } from './checkpoint';

/** The checkpoint to use when none is given: best/ of the run, else last/. */
export function defaultCheckpoint(cfg: Config): string {
  const run = path.join(cfg.checkpoint.ckpt_root, cfg.name);
  for (const sub of ['best', 'last']) if (checkpointExists(path.join(run, sub))) return path.join(run, sub);
  throw new UserError(`no checkpoint in ${run}/best or ${run}/last: train first (npx train --config ...) or pass --checkpoint DIR`);
}

export async function loadModel(cfg: Config, checkpoint: string): Promise<tf.LayersModel> {
  const model = getModel(cfg);
  const ck = await loadCheckpoint(checkpoint);
  applyWeights(model, ck.weights, checkpoint);
  return model;
}
