import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../backends';
import { watchDevice, provokeDeviceError, deviceErrorSeen } from '../backends/webgpu_errors';
async function main() {
  await initBackend('webgpu');
  watchDevice();
  const a = tf.ones([1000]);
  const b = tf.add(a, 1);
  await b.data();
  console.log('before', deviceErrorSeen());
  const bad = provokeDeviceError();
  const c = tf.mul(bad, 2);
  const v = await c.data();
  console.log('after read', deviceErrorSeen(), v.slice(0, 4));
}
main();
