import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createProgress, formatPayloadValue } from '../src/util/progress.js';

function sink(isTTY: boolean): { stream: Writable & { isTTY?: boolean }; text: () => string } {
  let out = '';
  const stream = new Writable({
    write(chunk, _enc, cb) {
      out += String(chunk);
      cb();
    },
  }) as Writable & { isTTY?: boolean; columns?: number };
  stream.isTTY = isTTY;
  return { stream, text: () => out };
}

test('progress: without a TTY, one plain line every N percent and a final line', () => {
  const s = sink(false);
  const p = createProgress('train', 200, { stream: s.stream, everyPercent: 25 });
  for (let i = 1; i <= 190; i++) p.update(i, { loss: 3 - i / 100, 'tok/s': 1234.56 });
  p.stop();
  p.stop();
  const lines = s.text().trimEnd().split('\n');
  assert.equal(lines.length, 4, lines.join('\n'));
  assert.match(lines[0]!, /^train: 25% \(50\/200\) \| loss 2\.500 \| tok\/s 1235 \| \d+s$/);
  assert.match(lines[3]!, /^train: 95% \(190\/200\)/);
});

test('progress: disabled prints nothing; payload formatting', () => {
  const s = sink(false);
  const p = createProgress('x', 10, { stream: s.stream, enabled: false });
  p.update(10, { loss: 1 });
  p.stop();
  assert.equal(s.text(), '');
  assert.equal(formatPayloadValue(12), '12');
  assert.equal(formatPayloadValue(0.123456), '0.1235');
  assert.equal(formatPayloadValue(4321.7), '4322');
  assert.equal(formatPayloadValue(NaN), 'NaN');
});

test('progress: on a TTY renders a bar with the payload', () => {
  const s = sink(true);
  const p = createProgress('train', 10, { stream: s.stream });
  p.update(5, { loss: 1.5 });
  p.stop();
  assert.match(s.text(), /train \[.*\] 50% \| 5\/10 \| loss 1\.500/);
});
