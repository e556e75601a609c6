// Seconds as '1h 02m 05s' / '2m 00s' / '7s': the report's training time and the progress bar's ETA.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from './self_test';

/** Rounds to whole seconds before splitting, so a minute is carried, never shown as 60 s. */
export function formatDuration(seconds: number): string {
  const t = Math.round(seconds);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  if (h) return `${h}h ${String(m).padStart(2, '0')}m ${String(sec).padStart(2, '0')}s`;
  return m ? `${m}m ${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

export const selfTest: SelfTest = {
  'splits hours, minutes and seconds, carrying a rounded-up minute'() {
    assert.equal(formatDuration(7.4), '7s');
    assert.equal(formatDuration(80), '1m 20s');
    assert.equal(formatDuration(119.6), '2m 00s');
    assert.equal(formatDuration(3600 + 125), '1h 02m 05s');
  },
};

runIfMain(module, selfTest);
