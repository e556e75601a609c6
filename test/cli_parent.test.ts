// `npx train` runs node under a shell under npm. Stopping npx kills that shell, which does
// not pass the signal on: the run must notice its parent is gone and stop as on SIGTERM
// (save last/, release the lock) instead of training on, orphaned.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { loadCheckpoint } from '../storage/checkpoint';
import { LOCK_FILE } from '../engine/run_lock';
import { nodeArgs, sleep, tinyConfig, tmpDir, writeConfig } from './helpers/cli';

const dir = tmpDir('parent');

/** The pid in the run's lock file; 0 while the run is between creating and writing it. */
function lockPid(file: string): number {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')).pid;
  } catch {
    return 0;
  }
}
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a run whose npx parent is gone stops as on SIGTERM and keeps last/', { timeout: 120_000 }, async () => {
  const config = writeConfig(dir, tinyConfig(dir, { name: 'orphan', training: { epochs: 500, val_interval: 100, print_interval: 1 }, checkpoint: { save_every_iters: 1 } }));
  const quoted = [process.execPath, ...nodeArgs('train'), '--config', config].map((a) => `'${a}'`).join(' ');
  // `; true` keeps the shell as the parent (no exec), as npx's shell is.
  const shell = spawn('sh', ['-c', `${quoted}; true`], { cwd: dir, env: { ...process.env, npm_command: 'exec', SEMSEG_DEBUG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  shell.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const lock = path.join(dir, 'checkpoints', 'orphan', LOCK_FILE);
  const last = path.join(dir, 'checkpoints', 'orphan', 'last');
  let pid = 0;
  for (let i = 0; i < 600 && !(pid && fs.existsSync(last)); i++) {
    await sleep(100);
    if (!pid && fs.existsSync(lock)) pid = lockPid(lock);
  }
  assert.ok(pid && fs.existsSync(last), `the run did not start: ${stderr.slice(-2000)}`);
  shell.kill('SIGKILL'); // npx's shell dies without passing anything on
  const alive = () => { try { process.kill(pid, 0); return true; } catch { return false; } };
  for (let i = 0; i < 300 && alive(); i++) await sleep(100);
  assert.ok(!alive(), 'the orphaned run is still training after 30 s');
  await sleep(200); // the last of its output through the pipe it kept
  assert.match(stderr, /warning: the parent process \(npx\) is gone; stopping as on SIGTERM/);
  assert.ok((await loadCheckpoint(last)).meta.step > 0, 'last/ loads');
  assert.ok(!fs.existsSync(lock), 'lock released');
});
