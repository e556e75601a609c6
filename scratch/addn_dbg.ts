import * as tf from '@tensorflow/tfjs';
import { webgpuVsCpu } from '../backends/webgpu_kernels/program';
import { seededValues } from '../utils/rng';
async function main() {
  console.log('start');
  const err = await webgpuVsCpu(() => { console.log('fn on', tf.getBackend()); return [tf.addN(Array.from({ length: 3 }, (_, i) => tf.tensor(seededValues(33, i), [3, 11])))]; });
  console.log('err', err);
}
main();
