import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
(async () => {
  await tf.setBackend('wasm');
  const x = tf.randomNormal([4, 128, 128, 32], 0, 1, 'float32', 1);
  const f = tf.randomNormal([3, 3, 32, 32], 0, 1, 'float32', 2);
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) tf.tidy(() => tf.conv2d(x, f, 1, 'same').dataSync());
    console.log('conv ms', (performance.now() - t0) / 10);
  }
  const y = tf.conv2d(x, f, 1, 'same').dataSync();
  let s = 0; for (let i = 0; i < y.length; i++) s += y[i] * (i % 7);
  console.log('checksum', s);
})();
