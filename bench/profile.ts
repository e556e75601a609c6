// Per-kernel time of one call of `fn`, summed by kernel name (tf.profile times each
// kernel synchronously on wasm/cpu). Used by `npm run bench -- --profile`.
import * as tf from '../backends/tf';
import { countDispatches } from '../backends/webgpu_kernels/program';

/**
 * Top kernels by total ms: {name: ms}, plus `_total_ms`, `_wall_ms`, `_kernels` (how many
 * engine kernels ran) and, on webgpu, `_dispatches` (shader runs: a kernel may run several,
 * a reshape none).
 */
export async function profileKernels(fn: () => unknown, top = 12): Promise<Record<string, number>> {
  const t0 = performance.now();
  let p!: Awaited<ReturnType<typeof tf.profile>>;
  const dispatches = await countDispatches(async () => { p = await tf.profile(async () => { await fn(); }); });
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
  if (dispatches !== null) out._dispatches = dispatches;
  return out;
}
