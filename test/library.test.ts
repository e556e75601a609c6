// The package as a user gets it: `npm pack`, installed into an empty folder. README's "Use
// from code" example runs there as written (taken from the README), twice, and wrapped as
// CommonJS; the commands run through npx as "Installed from npm" says (train, evaluate,
// predict, export-model on a copy of the package's demo config, made tiny); the tarball
// holds what a user needs and no tests, benches or dangling source maps.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import { loadCheckpoint } from '../storage/checkpoint';
import { killLeftovers, ROOT, runNode, show, sleep, tmpDir } from './helpers/cli';

const dirs: string[] = [];
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** The package root: the folder with package.json (ROOT is dist/ when compiled). */
const PKG = [ROOT, path.join(ROOT, '..')].find((d) => fs.existsSync(path.join(d, 'package.json')) && JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')).name === 'tfjs-semseg')!;

function npmRun(args: string[], cwd: string) {
  // --ignore-scripts: the package is built already (npm test compiles it first); for the
  // install, no dependency needs a script (sharp ships binaries; tfjs-node-gpu, optional,
  // would try to download libtensorflow, which no machine here can).
  const r = spawnSync('npm', [...args, '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `npm ${args.join(' ')}: ${r.stderr}`);
  return r;
}
const npm = (args: string[], cwd: string): string => npmRun(args, cwd).stdout;

/** Runs an installed bin the way the README says: `npx --no-install <cmd> ...` in the app folder. */
function npxEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/^npm_/i.test(k)) delete env[k]; // not `npm test`'s own package context
  delete env.NODE_TEST_CONTEXT;
  delete env.SEMSEG_DEBUG;
  return env;
}
function npx(cwd: string, args: string[]) {
  return spawnSync('npx', ['--no-install', ...args], { cwd, env: npxEnv(), encoding: 'utf8', timeout: 240_000 });
}

/** The app folder the first test installed the package into (the signal test reuses it). */
let installed: { app: string; tiny: string[] } | null = null;
const groups: number[] = [];
after(() => {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
});
/** Bytes of the files under `dir` (links not followed). */
function bytesUnder(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += bytesUnder(p);
    else if (e.isFile()) n += fs.statSync(p).size;
  }
  return n;
}
const shown = (r: ReturnType<typeof spawnSync>) => `exit ${r.status}\n--- stdout:\n${String(r.stdout).slice(-2000)}\n--- stderr:\n${String(r.stderr).slice(-2000)}`;

test('npm pack, installed in an empty folder: the README example (ESM, twice; CommonJS), the commands through npx, and the tarball\'s contents', { timeout: 900_000 }, async () => {
  const readme = fs.readFileSync(path.join(PKG, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Use from code'));
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code && code.includes("from 'tfjs-semseg'"), 'README "Use from code" has the example');
  const dir = tmpDir('library');
  dirs.push(dir);
  const tgz = npm(['pack', '--pack-destination', dir, PKG], dir).trim().split('\n').pop()!;

  // What the tarball holds: runtime code, configs, the web app, the bridge, the weights, the README;
  // no tests or benches, and no source map without the source it points at.
  const files = spawnSync('tar', ['tzf', path.join(dir, tgz)], { encoding: 'utf8' }).stdout.trim().split('\n').map((f) => f.replace(/^package\//, ''));
  for (const f of ['package.json', 'README.md', 'dist/api/index.js', 'dist/api/index.d.ts', 'dist/train.js', 'bin/train.js', 'bin/tfjs-semseg.js', 'configs/demo.yaml', 'deploy/web/app.js', 'deploy/web/index.html', 'deploy/web_train/index.html', 'dist/web_train/web_train.bundle.js', 'deploy/keras_bridge.py', 'deploy/keras_recipe/__init__.py', 'deploy/keras_recipe/errors.py', 'deploy/keras_recipe/recipe.py', 'deploy/keras_recipe/augment.py', 'deploy/keras_recipe/train_loop.py', 'weights/mobilenet_v2_imagenet/weights.bin', 'weights/mobilenet_v2_imagenet/LICENSE']) {
    assert.ok(files.includes(f), `${f} missing from the tarball`);
  }
  assert.deepEqual(files.filter((f) => /^(dist\/)?(test|bench)\//.test(f)), [], 'tests or benches shipped');
  assert.deepEqual(files.filter((f) => f.includes('__pycache__')), [], 'Python bytecode shipped');
  for (const map of files.filter((f) => f.endsWith('.map'))) {
    const sources = JSON.parse(fs.readFileSync(path.join(PKG, map), 'utf8')).sources as string[];
    for (const src of sources) assert.ok(files.includes(path.posix.join(path.posix.dirname(map), src)), `${map} points at ${src}, not shipped`);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8'));
  assert.equal(pkg.private, undefined, 'publishable');
  // `npm publish --dry-run` warns of nothing but the missing login (npm would also say here
  // when it had to correct package.json, e.g. a bin path).
  const publish = npmRun(['publish', '--dry-run'], PKG);
  const warns = publish.stderr.split('\n').filter((l) => /\bnpm (warn|WARN|ERR)/.test(l) && !/logged in/.test(l));
  assert.deepEqual(warns, [], publish.stderr.slice(-2000));

  const app = path.join(dir, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
  const t0 = Date.now();
  const install = npmRun(['install', path.join(dir, tgz)], app);
  const installS = (Date.now() - t0) / 1000;
  assert.doesNotMatch(install.stderr, /EBADENGINE/, `an engine warning on Node ${process.version}`);
  assert.ok(fs.existsSync(path.join(app, 'node_modules', 'tfjs-semseg', 'dist', 'api', 'index.js')));
  assert.ok(!fs.lstatSync(path.join(app, 'node_modules', 'tfjs-semseg')).isSymbolicLink(), 'installed from the tarball, not linked');
  for (const heavy of ['@tensorflow/tfjs', 'nsfwjs', 'webgpu']) assert.ok(!fs.existsSync(path.join(app, 'node_modules', heavy)), `${heavy} installed`);
  // The install's weight without the optional dependencies (README "Installed from npm": 157 MB); the target is under 200 MB.
  const mb = bytesUnder(path.join(app, 'node_modules')) / 1e6;
  assert.ok(mb < 200, `node_modules is ${mb.toFixed(0)} MB`);
  console.log(`# node_modules ${mb.toFixed(0)} MB`);

  // The example as written (ESM), and again in the same folder: a second run must not be refused.
  fs.writeFileSync(path.join(app, 'example.mjs'), code);
  for (let i = 0; i < 2; i++) {
    const r = await runNode([path.join(app, 'example.mjs')], { cwd: app });
    assert.equal(r.code, 0, `run ${i + 1}: ${show(r)}`);
    const [best, miou, n, width, output] = r.stdout.trim().split('\n').pop()!.split(' ');
    assert.equal(best, path.join('checkpoints', 'lib', 'best'));
    assert.ok(Number(miou) >= 0 && Number(miou) <= 1, miou);
    assert.equal(Number(n), 8);
    assert.ok(Number(width) > 0);
    assert.ok(fs.existsSync(path.join(app, output, 'model.json')));
  }
  assert.ok(fs.existsSync(path.join(app, 'checkpoints', 'lib', 'best', 'complete.json')));
  // Wrapped as CommonJS, as the README says.
  const cjs = `const { train, evaluate, predict, loadModel, exportModel } = require('tfjs-semseg');\n(async () => {\n${code.replace(/^import .*\n/m, '')}})().catch((e) => { console.error(e); process.exitCode = 1; });\n`;
  fs.writeFileSync(path.join(app, 'example.cjs'), cjs);
  const c = await runNode([path.join(app, 'example.cjs')], { cwd: app });
  assert.equal(c.code, 0, `CommonJS: ${show(c)}`);
  const types = fs.readFileSync(path.join(app, 'node_modules', 'tfjs-semseg', 'dist', 'api', 'index.d.ts'), 'utf8');
  for (const name of ['train', 'evaluate', 'predict', 'loadModel', 'exportModel', 'ConfigInput', 'ExportResult']) assert.match(types, new RegExp(`\\b${name}\\b`), name);

  // The declarations compile under strict without skipLibCheck (and without @types/node in the
  // app), and a misspelt config key or a value of the wrong type is a compile error.
  fs.writeFileSync(path.join(app, 'typed.mts'), [
    "import { train, exportModel, type ConfigInput, type ExportResult } from 'tfjs-semseg';",
    "const config: ConfigInput = { name: 'lib', backend: 'wasm', training: { epochs: 1 } };",
    "const run = await train(config, { quiet: true, overwrite: true, onWarning: (line) => console.log(line), abortSignal: new AbortController().signal });",
    "const out: ExportResult = await exportModel(config, { output: 'x' });",
    'console.log(run.checkpoints.best, run.warnings.length, out.modelBytes);',
    '// @ts-expect-error misspelt key',
    'await train({ trainng: { epochs: 1 } });',
    '// @ts-expect-error a value of the wrong type',
    "await train({ training: { epochs: 'five' } });",
  ].join('\n'));
  fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, skipLibCheck: false, noEmit: true, target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', types: [] }, files: ['typed.mts'] }));
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', app], { cwd: app, encoding: 'utf8' });
  assert.equal(tsc.status, 0, `tsc ${require('typescript').version}: ${tsc.stdout}${tsc.stderr}`);

  // The commands, as "Installed from npm" documents them, on a copy of the package's demo config made tiny.
  const help = npx(app, ['train', '--help']);
  assert.equal(help.status, 0, shown(help));
  assert.match(help.stdout, /^train --config FILE/m);
  // And in the clone itself, the mission's `npx train`: npm finds the project's own bins.
  const inClone = npx(PKG, ['train', '--help']);
  assert.equal(inClone.status, 0, shown(inClone));
  assert.match(inClone.stdout, /^train --config FILE/m);
  fs.copyFileSync(path.join(app, 'node_modules', 'tfjs-semseg', 'configs', 'demo.yaml'), path.join(app, 'my.yaml'));
  const tiny = ['--set', 'name=cli', '--set', 'backend=wasm', '--set', 'model.base=4', '--set', 'model.depth=2', '--set', 'data.root=data/cli', '--set', 'data.size=[32, 32]',
    '--set', 'data.synthetic.train=16', '--set', 'data.synthetic.val=8', '--set', 'data.synthetic.image_size=40', '--set', 'training.epochs=1', '--set', 'training.batch_size=4', '--set', 'training.workers=1'];
  const tr = npx(app, ['tfjs-semseg', 'train', '--config', 'my.yaml', ...tiny]);
  assert.equal(tr.status, 0, shown(tr));
  assert.match(tr.stdout, /^checkpoints: .*cli.*best/m);
  assert.ok(fs.existsSync(path.join(app, 'results', 'cli', 'config.yaml')), 'the resolved config is in the run folder');
  const ev = npx(app, ['evaluate', '--config', 'my.yaml', ...tiny]);
  assert.equal(ev.status, 0, shown(ev));
  assert.match(ev.stdout, /^metrics: /m);
  const pr = npx(app, ['predict', '--config', 'my.yaml', ...tiny, '--input', 'data/cli/ISIC2018_Task1-2_Validation_Input', '--output', 'pred']);
  assert.equal(pr.status, 0, shown(pr));
  assert.match(pr.stdout, /^wrote 8 prediction\(s\) to pred$/m);
  const ex = npx(app, ['export-model', '--config', 'my.yaml', ...tiny, '--web', '--output', 'web']);
  assert.equal(ex.status, 0, shown(ex));
  for (const f of ['model.json', 'index.html', 'tf-core.min.js']) assert.ok(fs.existsSync(path.join(app, 'web', f)), f);
  const wt = npx(app, ['tfjs-semseg', 'web-train', '--output', 'train-page']);
  assert.equal(wt.status, 0, shown(wt));
  for (const f of ['index.html', 'web_train.bundle.js', 'tfjs-backend-wasm-simd.wasm']) assert.ok(fs.existsSync(path.join(app, 'train-page', f)), f);
  const usage = npx(app, ['tfjs-semseg', 'train', '--epohcs', '3']);
  assert.equal(usage.status, 2, shown(usage));
  installed = { app, tiny };
  console.log(`# install ${installS.toFixed(1)} s`);
});

// A terminal's Ctrl-C signals the whole process group: npm (npx), its shell and the run. With
// sh (dash) between them, the run alone sees it, exits 130 after saving, and dash and npm then end
// by SIGINT (a shell's $? is 130 either way). With bash as the script shell (macOS's sh), the run
// is npm's own child and gets it twice, the group's and npm's forwarded copy: still one Ctrl-C.
test('Ctrl-C to the process group of `npx --no-install train` saves last/ and ends with status 130, under sh and bash', { timeout: 300_000 }, async (t) => {
  if (!installed) return t.skip('the install in the test above failed');
  const { app, tiny } = installed;
  for (const shell of ['sh', 'bash']) {
    const name = `sig-${shell}`;
    const last = path.join(app, 'checkpoints', name, 'last');
    const args = ['--no-install', `--script-shell=/bin/${shell}`, 'train', '--config', 'my.yaml', ...tiny, '--set', `name=${name}`, '--set', 'training.epochs=500', '--set', 'checkpoint.save_every_iters=1'];
    const child = spawn('npx', args, { cwd: app, env: npxEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    groups.push(child.pid!);
    const out = { stdout: '', stderr: '' };
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out.stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out.stderr += d));
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    let exited = false;
    void done.then(() => (exited = true));
    const step = async () => (await loadCheckpoint(last).catch(() => null))?.meta.step ?? -1;
    while ((await step()) < 2) {
      assert.ok(!exited, `${shell}: exited before saving step 2\n${out.stderr.slice(-2000)}`);
      await sleep(100);
    }
    process.kill(-child.pid!, 'SIGINT');
    const r = await done;
    const status = r.code ?? 128 + os.constants.signals[r.signal!]; // what a shell's $? shows
    const shownR = `${shell}: exit ${r.code} (signal ${r.signal})\n--- stdout:\n${out.stdout.slice(-1500)}\n--- stderr:\n${out.stderr.slice(-1500)}`;
    assert.equal(status, 130, shownR);
    const stopped = /stopped at epoch \d+, step (\d+); saved /.exec(out.stderr);
    assert.ok(stopped, shownR);
    assert.doesNotMatch(out.stderr, /again: stopped without saving/, shownR);
    assert.equal((await loadCheckpoint(last)).meta.step, Number(stopped[1]), shownR);
  }
});
