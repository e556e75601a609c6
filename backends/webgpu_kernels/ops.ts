// The webgpu kernels of this project as tensor ops (webgpu backend only).
import * as tf from '@tensorflow/tfjs';
import { runKernel } from './program';
import { BATCH_NORM_GRAD } from './batch_norm_grad';
import { BATCH_NORM_TRAIN } from './batch_norm_train';
import { MOVING_AVERAGE } from './moving_average';

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
