// One optimisation step: forward in training mode (batch norm uses batch
// statistics and updates its running ones), loss, gradients, update.
import * as tf from '../backends/tf';
import type { Batch } from '../pipeline/batcher';
import type { LossFn } from '../training/losses';
import type { StagedGradients, TrainOptimizer } from '../training/optimizers';
import { checkDevice } from '../backends/webgpu_errors';
import assert from 'node:assert/strict';
import { getModel } from '../models/registry';
import { initBackend } from '../backends';
import { parseConfig } from '../config/resolve';
import { buildLoss } from '../training/losses';
import { createOptimizer } from '../training/optimizers';
import { mulberry32 } from '../utils/rng';
import { withStepRandomness } from '../models/layers/seeded_dropout';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface TrainStep {
  /**
   * Runs one step and resolves to the loss, or NaN when the loss or a gradient is
   * not finite; then the weights are left untouched. The loss is read
   * asynchronously: webgpu under Node has no sync reads. `globalStep` (the steps done
   * before this one; default: this TrainStep's earlier calls) and the seed fix every random
   * draw of the forward pass (dropout masks), so a resumed run repeats them.
   */
  (batch: Batch, globalStep?: number): Promise<number>;
  dispose(): void;
}

/** `seed`: the run's training.seed, from which (with the step) the dropout masks are drawn. */
export function makeTrainStep(model: tf.LayersModel, lossFn: LossFn, optimizer: TrainOptimizer, seed = 0): TrainStep {
  // Keyed by the layer's own weight name (e.g. 'enc0_conv1/kernel'): tfjs renames the
  // underlying variables ('kernel_1') when a model is built twice in one process,
  // and optimizer state saved in a checkpoint must find its variable again.
  const vars: Record<string, tf.Variable> = {};
  const keyOf = new Map<string, string>();
  for (const w of model.trainableWeights) {
    const v = w.read() as tf.Variable;
    vars[w.originalName] = v;
    keyOf.set(v.name, w.originalName);
  }
  const varList = Object.values(vars);
  let calls = 0;
  const step = (async (batch: Batch, globalStep?: number) => {
    const at = globalStep ?? calls;
    calls++;
    const { n, h, w } = batch;
    const x = tf.tensor4d(batch.images, [n, h, w, 3]);
    const y = tf.tensor3d(Int32Array.from(batch.masks), [n, h, w], 'int32');
    const { value, grads } = withStepRandomness(seed, at, () => tf.variableGrads(() => lossFn(model.apply(x, { training: true }) as tf.Tensor4D, y), varList));
    const named: Record<string, tf.Tensor> = {};
    for (const [k, g] of Object.entries(grads)) named[keyOf.get(k)!] = g;
    let staged: StagedGradients | null = null;
    let checked: tf.Tensor | null = null;
    try {
      staged = optimizer.stageGradients(named, vars);
      // The loss plus 0 x the sum of all gradients: NaN when either is not finite. The loss
      // alone is not enough on wasm, where XNNPACK's clamps and ReLU turn NaN activations
      // into -Infinity or 0, so a diverged forward pass can still give a finite loss.
      const sum = staged.sum;
      checked = tf.tidy(() => tf.add(value, tf.mul(sum, 0)));
      const loss = (await checked.data())[0];
      // On webgpu a failed kernel reads as plausible numbers: nothing is applied after a device error.
      checkDevice('a training step');
      if (Number.isFinite(loss)) staged.apply();
      return loss;
    } finally {
      staged?.dispose();
      tf.dispose([x, y, value, grads]);
      checked?.dispose();
    }
  }) as TrainStep;
  step.dispose = () => optimizer.dispose();
  return step;
}

export const selfTest: SelfTest = {
  async 'a U-Net on wasm lowers the loss on a fixed batch, without leaking tensors'() {
    await initBackend('wasm');
    const cfg = parseConfig({ model: { base: 4, depth: 2 }, training: { optimizer: { lr: 0.01 } } });
    const model = getModel(cfg);
    const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
    const n = 2, h = 24, w = 24;
    const rng = mulberry32(3);
    const images = Float32Array.from({ length: n * h * w * 3 }, () => rng() * 2 - 1);
    const masks = new Uint8Array(n * h * w).map((_, i) => (images[i * 3] > 0 ? 1 : 0));
    const batch = { images, masks, n, h, w, ids: ['a', 'b'] };
    const first = await step(batch);
    const tensors = tf.memory().numTensors;
    let last = first;
    for (let i = 0; i < 15; i++) last = await step(batch);
    assert.equal(tf.memory().numTensors, tensors, 'tensors leaked');
    assert.ok(last < 0.7 * first, `loss ${first} -> ${last}`);
    step.dispose();
    model.dispose();
  },
};

runIfMain(module, selfTest);
