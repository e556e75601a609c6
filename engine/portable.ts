// The stock-layers copy of a model: what an export holds (deploy/export_model.ts) and what a
// checkpoint's exported model.json is compared with before its weights load (model_io.ts).
// Here, below both, so that the engine does not reach up into deploy/.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { fixedSizeTopology, getModelDefinition, ModelDefinition } from '../models/registry';
import { isProjectLayer } from '../models/layers/custom_layers';
import { applyWeights, snapshotWeights } from '../storage/checkpoint';
import { runIfMain, SelfTest } from '../utils/self_test';

/**
 * A copy of `model` at the fixed input size `size` built from stock tfjs layers only,
 * with the same weights (matched by name), so plain tfjs can load its export.
 */
export async function portableModel(model: tf.LayersModel, size: readonly [number, number], definition: ModelDefinition): Promise<tf.LayersModel> {
  const portable = definition.portable;
  const topo = fixedSizeTopology(model, size[0], size[1], null);
  // Built once with the project's classes at the fixed size: static shapes for the crops.
  const fixed = await tf.models.modelFromJSON({ modelTopology: topo });
  for (const l of topo.config.layers) portable[l.class_name]?.(l, fixed.getLayer(l.name));
  fixed.dispose();
  const stock = await tf.models.modelFromJSON({ modelTopology: topo });
  const left = stock.layers.find((l) => isProjectLayer(l.getClassName()));
  if (left) {
    stock.dispose();
    throw new Error(`layer ${left.name} (${left.getClassName()}) has no stock replacement in models/${definition.name}.ts's portable list`);
  }
  applyWeights(stock, await snapshotWeights(model), 'the model being exported');
  return stock;
}

/**
 * Export `model` at `size` and compare: the stock layer classes of the portable copy, and
 * the largest difference of their outputs on one random batch (the self-tests' export check).
 */
export async function comparePortable(model: tf.LayersModel, size: readonly [number, number], definition: ModelDefinition): Promise<{ classes: Set<string>; difference: number }> {
  const p = await portableModel(model, size, definition);
  const classes = new Set(p.layers.map((l) => l.getClassName()));
  const x = tf.randomNormal([2, ...size, 3], 0, 1, 'float32', 5);
  const difference = tf.tidy(() => tf.max(tf.abs(tf.sub(model.predict(x) as tf.Tensor, p.predict(x) as tf.Tensor))).dataSync()[0]);
  tf.dispose(x);
  p.dispose();
  return { classes, difference };
}

export const selfTest: SelfTest = {
  async 'the portable copy has only stock layers and the same outputs, also at an odd size'() {
    const { parseConfig } = await import('../config/resolve');
    const { getModel } = await import('../models/registry');
    for (const size of [[32, 32], [30, 45]] as [number, number][]) {
      const m = getModel(parseConfig({ model: { base: 4, depth: 2 } }));
      // Non-trivial BN statistics so a wrong mapping would show.
      for (const v of m.weights) if (/moving_(mean|variance)/.test(v.name)) v.write(tf.randomUniform(v.shape as number[], 0.5, 1.5, 'float32', 3));
      const { classes, difference: d } = await comparePortable(m, size, getModelDefinition('unet'));
      for (const c of classes) assert.ok(!isProjectLayer(c), `${c} left in the portable model`);
      assert.ok(classes.has('BatchNormalization') && classes.has('Cropping2D'));
      assert.ok(d < 1e-5, `max difference ${d} at ${size}`);
      m.dispose();
    }
  },
};

runIfMain(module, selfTest);
