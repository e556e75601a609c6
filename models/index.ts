// Model registry: a config names an architecture, getModel builds it.
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { Config, outChannels, parseConfig } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { buildUNet } from './unet';

export type ModelBuilder = (cfg: Config) => tf.LayersModel;

const registry = new Map<string, ModelBuilder>();

export function registerModel(name: string, build: ModelBuilder): void {
  registry.set(name, build);
}

export function registeredModels(): string[] {
  return [...registry.keys()].sort();
}

export function getModel(cfg: Config): tf.LayersModel {
  const build = registry.get(cfg.model.name);
  if (!build) throw new UserError(`model.name '${cfg.model.name}' is not a registered model; registered: ${registeredModels().join(', ')}`);
  return build(cfg);
}

registerModel('unet', (cfg) =>
  buildUNet({
    inChannels: cfg.model.in_channels,
    outChannels: outChannels(cfg),
    base: cfg.model.base,
    depth: cfg.model.depth,
    upMode: cfg.model.up_mode,
    batchNorm: cfg.model.batch_norm,
    seed: cfg.training.seed,
  }),
);

export const selfTest: SelfTest = {
  'builds unet by name with outputs from the config'() {
    const m = getModel(parseConfig({ model: { base: 4, depth: 2 }, data: { num_classes: 19 } }));
    assert.equal(m.outputs[0].shape[3], 19);
    m.dispose();
  },
  'unknown name lists the registered ones'() {
    assert.throws(() => getModel(parseConfig({ model: { name: 'segformer' } })), /'segformer' is not a registered model; registered: unet/);
  },
};

runIfMain(module, selfTest);
