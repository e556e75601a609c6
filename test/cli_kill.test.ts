// `train` stopped by signals, as a user (Ctrl-C), a scheduler (SIGTERM) or the OOM killer
// (SIGKILL) would: the run exits cleanly where it can, and checkpoints/<name>/last is
// loadable after every kind of stop, with a step that never goes backwards.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { loadCheckpoint } from '../storage/checkpoint';
import { SAME_SIGNAL_MS } from '../engine/stop';
import { mulberry32 } from '../utils/rng';
import { assertOk, killLeftovers, show, sleep, start, Started, tinyConfig, tmpDir, writeConfig } from './helpers/cli';

const TIMEOUT = 180_000;
const dirs: string[] = [];
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A run long enough never to finish by itself, saving last/ after every step. */
function longRun(name: string) {
  const dir = tmpDir(`kill-${name}`);
  dirs.push(dir);
  const config = writeConfig(
    dir,
    tinyConfig(dir, { name, training: { epochs: 500, val_interval: 100, print_interval: 1 }, checkpoint: { save_every_iters: 1 } }),
  );
  return { dir, config, last: path.join(dir, 'checkpoints', name, 'last') };
}

/** Step of the checkpoint in `dir`, or -1 while there is none yet. */
async function savedStep(dir: string): Promise<number> {
  try {
    return (await loadCheckpoint(dir)).meta.step;
  } catch {
    return -1;
  }
}

/** Waits until `dir` holds a checkpoint of at least `step`; fails if the run exits first. */
async function waitForStep(dir: string, step: number, run: Started): Promise<void> {
  let exited = false;
  void run.done.then(() => (exited = true));
  while ((await savedStep(dir)) < step) {
    if (exited) assert.fail(`run exited before saving step ${step}\n${show(await run.done)}`);
    await sleep(100);
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`${signal} saves last/, prints how to resume and exits 128 + the signal's number`, { timeout: TIMEOUT }, async () => {
    const { config, last } = longRun(signal.toLowerCase());
    const run = start('train', ['--config', config]);
    await waitForStep(last, 3, run);
    run.child.kill(signal);
    const r = await run.done;
    assert.equal(r.code, signal === 'SIGINT' ? 130 : 143, show(r)); // so `train && export-model` stops
    // Diagnostics, on stderr: stdout is for results.
    assert.ok(r.stderr.includes(`${signal}: finishing the current step`), show(r));
    assert.ok(r.stderr.includes(`Resume with: npx train --config ${config} --resume`), show(r));
    const stopped = /stopped at epoch \d+, step (\d+); saved (.+)\. Resume with/.exec(r.stderr);
    assert.ok(stopped, show(r));
    assert.equal(stopped[2], last);
    const ck = await loadCheckpoint(last);
    assert.equal(ck.meta.step, Number(stopped[1])); // the step it says it saved
    assert.ok(ck.meta.step >= 3);
    assert.doesNotMatch(r.stdout + r.stderr, /^done in/m); // interrupted runs do not claim to be done
  });
}

test('a second SIGINT leaves at once, and last/ stays loadable', { timeout: TIMEOUT }, async () => {
  const { config, last } = longRun('twice');
  const run = start('train', ['--config', config]);
  await waitForStep(last, 2, run);
  run.child.kill('SIGINT');
  await run.waitFor(/SIGINT: finishing the current step/);
  await sleep(SAME_SIGNAL_MS + 200); // sooner, it would count as the same Ctrl-C forwarded
  run.child.kill('SIGINT');
  const r = await run.done;
  // 130 = left on the second Ctrl-C. If the clean stop had already finished, the run
  // exits 130 either way, or the second signal meets the default handler on the way out (killed by SIGINT).
  const cleanStopDone = r.stderr.includes('Resume with:') && r.signal === 'SIGINT';
  if (r.code !== 130) assert.ok(cleanStopDone, show(r));
  assert.ok((await loadCheckpoint(last)).meta.step >= 2);
});

test('SIGKILL at random moments never loses last/ nor moves it backwards', { timeout: TIMEOUT }, async (t) => {
  const { config, last } = longRun('sigkill');
  const seed = Date.now() % 1_000_000;
  const rand = mulberry32(seed);
  const kills: string[] = []; // for the failure message: delay and step after each kill
  let prev = -1;
  for (let i = 0; i < 6; i++) {
    const run = start('train', ['--config', config, ...(i ? ['--resume'] : [])]);
    // Training is under way once the first checkpoint exists (first run) or it has resumed.
    if (i === 0) await waitForStep(last, 1, run);
    else await run.waitFor(/^resumed from /m);
    const delay = Math.floor(rand() * 1500);
    await sleep(delay);
    run.child.kill('SIGKILL');
    const r = await run.done;
    assert.equal(r.signal, 'SIGKILL', show(r));
    let step: number;
    try {
      step = (await loadCheckpoint(last)).meta.step;
    } catch (err) {
      assert.fail(`seed ${seed}, kills ${kills.join(' ')}, kill ${i + 1} after ${delay} ms: last/ not loadable: ${(err as Error).message}`);
    }
    kills.push(`${delay}ms->step${step}`);
    assert.ok(step >= prev && step >= 1, `seed ${seed}: step went from ${prev} to ${step} (${kills.join(' ')})`);
    prev = step;
  }
  t.diagnostic(`seed ${seed}; kill delay -> saved step: ${kills.join(' ')}`);
  // A kill mid-way through writing config.yaml leaves its temporary: plant one (a dead pid's) so the clean-up is always checked.
  const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;
  fs.writeFileSync(path.join(path.dirname(last), `.config.yaml.tmp-${deadPid}-c7a0ac86`), 'half');
  // And the killed run still resumes and completes (ending two steps further on).
  const r = await start('train', ['--config', config, '--resume', '--set', `training.iterations=${prev + 2}`]).done;
  assertOk(r);
  assert.match(r.stderr, new RegExp(`^resumed from .*: epoch \\d+, step ${prev}$`, 'm'));
  assert.equal((await loadCheckpoint(last)).meta.step, prev + 2);
  // Half-written copies left by the killed runs are cleared away.
  const leftovers = fs.readdirSync(path.dirname(last)).filter((f) => /tmp|trash/.test(f));
  assert.deepEqual(leftovers, [], `seed ${seed}`);
});
