// Per-channel reductions over [rows, channels] data, one workgroup per channel:
// each thread strides over the rows, then the workgroup sums its threads' parts.
// Shared by the batch-norm kernels (statistics and gradient sums).
export const REDUCE_THREADS = 256;

/** WGSL: `reduceSum(v)` sums v over the workgroup; every thread gets the total. */
export const workgroupSum = `
  var<workgroup> parts : array<f32, ${REDUCE_THREADS}>;
  fn reduceSum(v : f32) -> f32 {
    parts[localId.x] = v;
    workgroupBarrier();
    for (var s = ${REDUCE_THREADS / 2}u; s > 0u; s = s >> 1u) {
      if (localId.x < s) { parts[localId.x] = parts[localId.x] + parts[localId.x + s]; }
      workgroupBarrier();
    }
    let total = parts[0];
    workgroupBarrier();
    return total;
  }`;
