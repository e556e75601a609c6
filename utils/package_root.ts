// Where the package's own files are (configs, weights, the web app): the folder holding its
// package.json, found from this file in the sources (tsx) or in dist/ (compiled, installed).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runIfMain, SelfTest } from './self_test';

/** The folder holding package.json: the sources (tsx) or one above dist/ (compiled). */
export function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'tfjs-semseg') return dir;
    if (path.dirname(dir) === dir) throw new Error(`package.json of tfjs-semseg not found above ${__dirname}`);
  }
}

export function packageInfo(): { name: string; version: string } {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8'));
  return { name: pkg.name, version: pkg.version };
}

export const selfTest: SelfTest = {
  'the package root holds its package.json, configs and weights'() {
    assert.equal(packageInfo().name, 'tfjs-semseg');
    for (const f of ['configs/demo.yaml', 'weights/mobilenet_v2_imagenet/model.json']) assert.ok(fs.existsSync(path.join(packageRoot(), f)), f);
  },
};

runIfMain(module, selfTest);
