// This project's webgpu kernels: the registration list (startWebgpu calls
// registerWebgpuKernels) and the custom kernels ('Semseg*') as tensor ops.
// AddN and Cast replace the stock kernels.
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { isOurKernel, replaceKernel } from '../wasm_heap';
import { ADAM_UPDATE, AdamStep, adamUpdateConfig } from './adam_update';
import { addNConfig } from './add_n';
import { castKernel } from './cast';
import { im2colConfig } from './im2col';
import { BATCH_NORM_GRAD, batchNormGradConfig } from './batch_norm_grad';
import { BATCH_NORM_TRAIN, batchNormTrainConfig } from './batch_norm_train';
import { MOVING_AVERAGE, movingAverageConfig } from './moving_average';
import { runKernel } from './program';

const KERNELS: tf.KernelConfig[] = [addNConfig, batchNormTrainConfig, batchNormGradConfig, movingAverageConfig, im2colConfig, adamUpdateConfig];

export function registerWebgpuKernels(): void {
  for (const k of KERNELS) replaceKernel(k.kernelName, k.backendName, () => k.kernelFunc);
  replaceKernel('Cast', 'webgpu', (stock) => {
    if (!stock) throw new Error('the stock webgpu Cast kernel is missing');
    return castKernel(stock);
  });
}

/** Training-mode batch norm: y and stats [2, C] = (batch mean, biased variance). */
export function batchNormTrainOp(x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, epsilon: number): { y: tf.Tensor; stats: tf.Tensor2D } {
  const [y, stats] = runKernel(BATCH_NORM_TRAIN, { x, gamma, beta }, { epsilon }) as tf.Tensor[];
  return { y, stats: stats as tf.Tensor2D };
}

/** dx, dGamma, dBeta of batchNormTrainOp given dy. */
export function batchNormGradOp(dy: tf.Tensor, x: tf.Tensor, stats: tf.Tensor2D, gamma: tf.Tensor1D, epsilon: number): [tf.Tensor, tf.Tensor1D, tf.Tensor1D] {
  return runKernel(BATCH_NORM_GRAD, { dy, x, stats, gamma }, { epsilon }) as [tf.Tensor, tf.Tensor1D, tf.Tensor1D];
}

/** The moving statistics after one batch: v - (v - batch) * (1 - momentum). */
export function movingAverageOp(mean: tf.Tensor1D, variance: tf.Tensor1D, stats: tf.Tensor2D, momentum: number): [tf.Tensor1D, tf.Tensor1D] {
  return runKernel(MOVING_AVERAGE, { mean, variance, stats }, { momentum }) as [tf.Tensor1D, tf.Tensor1D];
}

/** One Adam/AdamW step over flat buffers: [new weights, m, v] (see adam_update.ts). */
export function adamUpdateOp(w: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, step: AdamStep): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return runKernel(ADAM_UPDATE, { w, g, m, v }, step as unknown as Record<string, unknown>) as [tf.Tensor, tf.Tensor, tf.Tensor];
}

export const selfTest: SelfTest = {
  async 'every kernel of the list is registered for webgpu, AddN and Cast in place of the stock ones'() {
    // Started as the commands start it (lavapipe will do): the stock kernels exist then.
    const { initBackend } = await import('../index');
    process.env.SEMSEG_WEBGPU_SOFTWARE ??= '1';
    await initBackend('webgpu');
    for (const k of KERNELS) assert.equal(tf.getKernel(k.kernelName, 'webgpu')?.kernelFunc, k.kernelFunc, k.kernelName);
    assert.ok(isOurKernel('Cast', 'webgpu'), 'Cast');
  },
};

runIfMain(module, selfTest);
