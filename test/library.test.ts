// The library as a user gets it: `npm pack`, installed into an empty folder, runs README's
// "Use from code" example as written there (taken from the README), and the example's
// results are checked; the installed package's types declare the five entry points.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { killLeftovers, ROOT, runNode, show, tmpDir } from './helpers/cli';

const dirs: string[] = [];
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** The package root: the folder with package.json (ROOT is dist/ when compiled). */
const PKG = [ROOT, path.join(ROOT, '..')].find((d) => fs.existsSync(path.join(d, 'package.json')) && JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')).name === 'tfjs-semseg')!;

function npm(args: string[], cwd: string): string {
  // --ignore-scripts: the package is built already (npm test compiles it first); for the
  // install, no dependency needs a script (sharp ships binaries; tfjs-node-gpu, optional,
  // would try to download libtensorflow, which no machine here can).
  const r = spawnSync('npm', [...args, '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `npm ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('npm pack, installed in an empty folder, runs the README example and returns results', { timeout: 600_000 }, async () => {
  const readme = fs.readFileSync(path.join(PKG, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Use from code'));
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code && code.includes("from 'tfjs-semseg'"), 'README "Use from code" has the example');
  const dir = tmpDir('library');
  dirs.push(dir);
  const tgz = npm(['pack', '--pack-destination', dir, PKG], dir).trim().split('\n').pop()!;
  const app = path.join(dir, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
  npm(['install', path.join(dir, tgz)], app);
  assert.ok(fs.existsSync(path.join(app, 'node_modules', 'tfjs-semseg', 'dist', 'api', 'index.js')));
  assert.ok(!fs.lstatSync(path.join(app, 'node_modules', 'tfjs-semseg')).isSymbolicLink(), 'installed from the tarball, not linked');
  fs.writeFileSync(path.join(app, 'example.mjs'), code);
  const r = await runNode([path.join(app, 'example.mjs')], { cwd: app });
  assert.equal(r.code, 0, show(r));
  const [best, miou, n, width, output] = r.stdout.trim().split('\n').pop()!.split(' ');
  assert.equal(best, path.join('checkpoints', 'lib', 'best'));
  assert.ok(Number(miou) >= 0 && Number(miou) <= 1, miou);
  assert.equal(Number(n), 8);
  assert.ok(Number(width) > 0);
  assert.ok(fs.existsSync(path.join(app, output, 'model.json')));
  assert.ok(fs.existsSync(path.join(app, 'checkpoints', 'lib', 'best', 'complete.json')));
  const types = fs.readFileSync(path.join(app, 'node_modules', 'tfjs-semseg', 'dist', 'api', 'index.d.ts'), 'utf8');
  for (const name of ['train', 'evaluate', 'predict', 'loadModel', 'exportModel']) assert.match(types, new RegExp(`\\b${name}\\b`), name);
});
