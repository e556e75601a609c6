// ONNX Runtime (Python) for the ONNX tests: models are written here, checked and run by
// test/fixtures/run_onnx.py --jobs in one process, and compared with TF.js by the tests.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '../../backends/tf';

export const RUNNER = [path.join(__dirname, '..', 'fixtures', 'run_onnx.py'), path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'run_onnx.py')].find((f) => fs.existsSync(f))!;
export const INSTALL = 'python3 with onnx and onnxruntime is needed: pip install --index-url file:///opt/pypi/simple onnx onnxruntime (README "ONNX")';

export interface Job { model: string; runs: { input: string; shape: string; output: string }[] }
export interface JobResult { error?: string; opset: number; input: (string | number)[]; output: (string | number)[]; shapes: number[][]; ops: string[]; metadata: Record<string, string> }

/** onnx.checker and ONNX Runtime on every job, in one python3; one result per job, in order. */
export function runJobs(dir: string, jobs: Job[]): JobResult[] {
  const file = path.join(dir, 'jobs.json');
  fs.writeFileSync(file, JSON.stringify(jobs));
  const r = spawnSync('python3', [RUNNER, '--jobs', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${/No module named/.test(r.stderr) ? `${INSTALL}\n` : ''}${r.stderr.split('\n').slice(-4).join('\n')}`);
  const results = JSON.parse(r.stdout) as JobResult[];
  assert.equal(results.length, jobs.length);
  return results;
}

export function writeF32(file: string, t: tf.Tensor): void {
  fs.writeFileSync(file, t.dataSync() as Float32Array);
}

export function readF32(file: string, shape: number[]): tf.Tensor {
  const buf = fs.readFileSync(file);
  return tf.tensor(new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4), shape);
}

export const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
