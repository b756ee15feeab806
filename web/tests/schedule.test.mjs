// The page's per-step uniform follows the exported plan's rules (runtime.js, ruleValue): in Node,
// no browser — every scheduled field of the native engine's first steps, as reference.json records
// them, equals the rule's value rounded to the field's type, bit for bit; so do the evaluation
// steps' noise counters (the plan's `evaluation` rule). plan-test is the default
// model; plan-deep weighs the KL (β = 2, a warm-up), so its kl_weight ramps, and trains with AdamW
// under a cosine schedule with a 3-step warm-up, so its step size and decay follow the schedule.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { evalDrawsStart, evalRngStep, lrFactor, powi, ruleValue, scheduledValues } from '../runtime.js';

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
    // Evaluation steps: the noise counters the native model writes after epochs 1 and 2.
    assert.ok(reference.eval_rng_steps.length >= 6);
    for (const [epoch, step, want] of reference.eval_rng_steps) {
      const d = evalDrawsStart(plan.evaluation, epoch) + step + 1;
      assert.equal(evalRngStep(plan.evaluation, d), want, `evaluation step ${step} after epoch ${epoch}`);
    }
    if (name === 'plan-deep') {
      const w = reference.uniforms.map((/** @type {any} */ u) => u.kl_weight);
      assert.equal(w[0], 0, 'the warm-up starts at 0');
      assert.ok(w[w.length - 1] > w[0], `kl_weight ramps: ${w}`);
      assert.equal(plan.train.optimizer, 'adamw');
      const decay = reference.uniforms.map((/** @type {any} */ u) => u.decay);
      assert.ok(decay.every((/** @type {number} */ d) => d < 1), `AdamW decays: ${decay}`);
      // The warm-up: the decay's distance from 1 grows with the lr, which rises for 3 steps.
      assert.ok(1 - decay[0] < 1 - decay[2], `the warm-up raises the lr: ${decay}`);
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

test('rules: a warm-up then half a cosine to 0 at the last step, as LrSchedule::factor', () => {
  const s = /** @type {const} */ ({ shape: 'cosine', warmup_steps: 4, total_steps: 14 });
  assert.deepEqual([1, 2, 3, 4].map((t) => lrFactor(s, t)), [0.25, 0.5, 0.75, 1]);
  assert.ok(Math.abs(lrFactor(s, 9) - 0.5) < 1e-12);
  assert.ok(Math.abs(lrFactor(s, 14)) < 1e-15);
  assert.equal(lrFactor({ shape: 'constant', warmup_steps: 0, total_steps: 0 }, 7), 1);
  const rule = /** @type {const} */ ({ rule: 'one_minus_lr_times', lr: 0.01, times: 0.05, schedule: s });
  assert.equal(ruleValue(rule, 4), 1 - 0.01 * 1 * 0.05);
});
