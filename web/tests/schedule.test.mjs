// The page's per-step uniform follows the exported plan's rules (runtime.js, ruleValue): in Node,
// no browser — every scheduled field of the native engine's first steps, as reference.json records
// them, equals the rule's value rounded to the field's type, bit for bit. plan-test is the default
// model; plan-deep weighs the KL (β = 2, a warm-up), so its kl_weight ramps.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { powi, ruleValue, scheduledValues } from '../runtime.js';

const dir = new URL('..', import.meta.url);

for (const name of ['plan-test', 'plan-deep']) {
  test(`${name}: the plan's rules give the native engine's uniform, step by step`, () => {
    const plan = JSON.parse(readFileSync(new URL(`${name}/plan.json`, dir), 'utf8'));
    const reference = JSON.parse(readFileSync(new URL(`${name}/reference.json`, dir), 'utf8'));
    const fields = plan.uniform.fields;
    const scheduled = fields.filter((/** @type {any} */ f) => f.rule);
    assert.ok(scheduled.length >= 6, `${scheduled.length} scheduled fields`);
    assert.equal(reference.uniforms.length, reference.steps);
    reference.uniforms.forEach((/** @type {Record<string, number>} */ want, /** @type {number} */ i) => {
      const got = scheduledValues(fields, i + 1);
      for (const f of scheduled) {
        const v = f.type === 'f32' ? Math.fround(got[f.name]) : got[f.name] >>> 0;
        assert.equal(v, want[f.name], `${f.name} at step ${i + 1}`);
      }
    });
    if (name === 'plan-deep') {
      const w = reference.uniforms.map((/** @type {any} */ u) => u.kl_weight);
      assert.equal(w[0], 0, 'the warm-up starts at 0');
      assert.ok(w[w.length - 1] > w[0], `kl_weight ramps: ${w}`);
    }
  });
}

test('rules: powi is square-and-multiply; a ramp reaches its value and stays', () => {
  assert.equal(powi(0.9, 3), 0.9 * 0.9 * 0.9);
  assert.equal(powi(2, 10), 1024);
  const ramp = /** @type {const} */ ({ rule: 'ramp', to: 4, steps: 10 });
  assert.deepEqual([1, 6, 11, 50].map((t) => ruleValue(ramp, t)), [0, 2, 4, 4]);
  assert.equal(ruleValue({ rule: 'ramp', to: 3, steps: 0 }, 1), 3);
  assert.throws(() => ruleValue(/** @type {any} */ ({ rule: 'cosine' }), 1), /does not know/);
});
