// This project's webgpu kernels, registered by startWebgpu. Each custom kernel
// ('Semseg*') is called through ops.ts; AddN replaces the stock kernel.
import * as tf from '@tensorflow/tfjs';
import { replaceKernel } from '../wasm_heap';
import { addNConfig } from './add_n';
import { batchNormGradConfig } from './batch_norm_grad';
import { batchNormTrainConfig } from './batch_norm_train';
import { movingAverageConfig } from './moving_average';

const KERNELS: tf.KernelConfig[] = [addNConfig, batchNormTrainConfig, batchNormGradConfig, movingAverageConfig];

export function registerWebgpuKernels(): void {
  for (const k of KERNELS) replaceKernel(k.kernelName, k.backendName, () => k.kernelFunc);
}
