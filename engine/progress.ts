// Per-epoch progress bar (cli-progress) with loss, learning rate, images/s and ETA.
// Without a terminal (CI, log files) it prints a plain line every few seconds instead.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';
import cliProgress from 'cli-progress';
import { formatDuration } from '../utils/duration';

export class EpochProgress {
  private bar: cliProgress.SingleBar;
  private started = Date.now();
  private images = 0;

  constructor(readonly epoch: number, readonly epochs: number, total: number, startAt = 0) {
    this.bar = new cliProgress.SingleBar(
      {
        format: `epoch ${epoch + 1}/${epochs} {bar} {value}/{total} | loss {loss} | lr {lr} | {ips} img/s | ETA {eta_formatted}`,
        barsize: 24,
        hideCursor: true,
        noTTYOutput: true,
        notTTYSchedule: 5000,
        etaBuffer: 20,
        formatTime: (t: number) => formatEta(t),
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, startAt, { loss: '-', lr: '-', ips: '-' });
  }

  update(step: number, loss: number, lr: number, batchSize: number): void {
    this.images += batchSize;
    const secs = (Date.now() - this.started) / 1000;
    this.bar.update(step, { loss: loss.toFixed(4), lr: lr.toExponential(2), ips: (this.images / Math.max(secs, 1e-3)).toFixed(1) });
  }

  stop(): void {
    this.bar.stop();
  }
}

/** cli-progress rounds the seconds after splitting off the minutes, printing '1m60s'. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  return formatDuration(seconds > 10 ? 5 * Math.round(seconds / 5) : seconds);
}

export const selfTest: SelfTest = {
  'runs to the end without a terminal and reports rates'() {
    const p = new EpochProgress(0, 1, 3);
    for (let s = 1; s <= 3; s++) p.update(s, 0.5, 1e-3, 4);
    assert.equal((p as any).images, 12);
    p.stop();
  },
  'formats the ETA with whole minutes carried, never 60 seconds'() {
    assert.equal(formatEta(119), '2m 00s');
    assert.equal(formatEta(118), '2m 00s');
    assert.equal(formatEta(80), '1m 20s');
    assert.equal(formatEta(7.4), '7s');
    assert.equal(formatEta(3599), '1h 00m 00s');
    assert.equal(formatEta(3600 + 125), '1h 02m 05s');
    assert.equal(formatEta(Infinity), '-');
  },
};

runIfMain(module, selfTest);
