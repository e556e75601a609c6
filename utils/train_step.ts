// One optimisation step: forward in training mode (batch norm uses batch
// statistics and updates its running ones), loss, gradients, update.
import * as tf from '@tensorflow/tfjs';
import type { Batch } from '../loaders/batcher';
import type { LossFn } from './losses';
import type { TrainOptimizer } from './optimizers';

export interface TrainStep {
  /** Runs one step and returns the loss; a non-finite loss leaves the weights untouched. */
  (batch: Batch): number;
  dispose(): void;
}

export function makeTrainStep(model: tf.LayersModel, lossFn: LossFn, optimizer: TrainOptimizer): TrainStep {
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
  const step = ((batch: Batch) => {
    const { n, h, w } = batch;
    const x = tf.tensor4d(batch.images, [n, h, w, 3]);
    const y = tf.tensor3d(Int32Array.from(batch.masks), [n, h, w], 'int32');
    const { value, grads } = tf.variableGrads(() => lossFn(model.apply(x, { training: true }) as tf.Tensor4D, y), varList);
    const loss = value.dataSync()[0];
    const named: Record<string, tf.Tensor> = {};
    for (const [k, g] of Object.entries(grads)) named[keyOf.get(k)!] = g;
    if (Number.isFinite(loss)) optimizer.applyGradients(named, vars);
    tf.dispose([x, y, value, grads]);
    return loss;
  }) as TrainStep;
  step.dispose = () => optimizer.dispose();
  return step;
}
