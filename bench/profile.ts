// Per-kernel time of one call of `fn`, summed by kernel name (tf.profile times each
// kernel synchronously on wasm/cpu). Used by `npm run bench -- --profile`.
import * as tf from '@tensorflow/tfjs';

/** Top kernels by total ms: {name: ms}, plus `_total_ms`, `_wall_ms` and `_kernels` (how many ran). */
export async function profileKernels(fn: () => unknown, top = 12): Promise<Record<string, number>> {
  const t0 = performance.now();
  const p = await tf.profile(async () => { await fn(); });
  const wall = performance.now() - t0;
  const byName = new Map<string, number>();
  for (const k of p.kernels) {
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    byName.set(k.name, (byName.get(k.name) ?? 0) + ms);
  }
  const sorted = [...byName.entries()].sort((a, b) => b[1] - a[1]);
  const out: Record<string, number> = {};
  for (const [name, ms] of sorted.slice(0, top)) out[name] = Math.round(ms);
  out._total_ms = Math.round(sorted.reduce((s, [, ms]) => s + ms, 0));
  out._wall_ms = Math.round(wall);
  out._kernels = p.kernels.length;
  return out;
}
