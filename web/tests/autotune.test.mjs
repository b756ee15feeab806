// The page's kernel choice, in Node without a browser: the rule's parameters come from the plan
// (the native autotune's, `kernels::AUTOTUNE`), and the pure functions that apply them (which
// candidates are timed, how many launches a round, the fastest, the output comparison) give the
// same answers as the native rule on the same examples (src/kernels/mod.rs's
// `autotune_rule_examples` holds the native side to these numbers).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareOutputs, fastest, repsFor, worthTiming } from '../runtime.js';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const plan = JSON.parse(readFileSync(join(WEB, 'plan-test', 'plan.json'), 'utf8'));
const rule = plan.autotune;

test('the plan carries the native autotune rule', () => {
  assert.deepEqual(rule, {
    rounds: 5,
    target_secs: 2e-3,
    max_reps: 64,
    skip_factor: 4,
    skip_slack_secs: 1e-3,
    tolerance: 1e-3,
  });
});

test('launches per round, and which candidates are timed, as natively', () => {
  // (rough seconds, launches): enough for 2 ms, 1 to 64.
  for (const [first, reps] of [[1e-9, 64], [1e-5, 64], [1e-4, 20], [3e-4, 7], [2e-3, 1], [0.5, 1]]) {
    assert.equal(repsFor(first, rule), reps, `repsFor(${first})`);
  }
  // Fastest rough time 1 ms: within 4 × 1 ms + 1 ms = 5 ms is timed.
  const cands = [
    { variant: 'direct', first: 4e-3 },
    { variant: 'tiled', first: 1e-3 },
    { variant: 'subgroup', first: 5e-3 },
    { variant: 'slow', first: 5.1e-3 },
  ];
  assert.deepEqual(worthTiming(cands, rule).map((c) => c.variant), ['direct', 'tiled', 'subgroup']);
  assert.equal(fastest([{ variant: 'direct', secs: 2 }, { variant: 'tiled', secs: 1 }, { variant: 'sg', secs: 1 }]), 'tiled');
  assert.equal(fastest([]), null);
});

test('a candidate whose outputs differ from direct by more than the tolerance is dropped', () => {
  const b = /** @type {any} */ ({ binding: 2, buffer: 0, offset: 0, size: 16 });
  const want = new Float32Array([1, -3, 0.5, 2]);
  const ref = { bindings: [b], data: [want], fills: [new Float32Array(4)] };
  const same = compareOutputs(ref, [b], [new Float32Array(want)], false, rule.tolerance);
  assert.equal(same.ok, true);
  // 1e-3 × (1 + 3) = 4e-3 is the bound.
  const close = compareOutputs(ref, [b], [new Float32Array([1, -3 + 3.9e-3, 0.5, 2])], false, rule.tolerance);
  assert.equal(close.ok, true);
  const far = compareOutputs(ref, [b], [new Float32Array([1, -3 + 4.1e-3, 0.5, 2])], false, rule.tolerance);
  assert.equal(far.ok, false);
  const unwritten = compareOutputs(ref, [b], [new Float32Array([1, -3, NaN, 2])], false, rule.tolerance);
  assert.equal(unwritten.ok, false);
});
