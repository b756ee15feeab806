// The page's JavaScript is type-checked: `// @ts-check` in app.js and runtime.js is held by the
// TypeScript compiler (a locked devDependency, web/tsconfig.json: strict, WebGPU's types from
// @webgpu/types), so a wrong argument or a misspelt field fails here, not in a user's browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');

test('app.js and runtime.js pass tsc --noEmit --checkJs (strict)', () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', WEB], { encoding: 'utf8' });
  assert.equal(r.status, 0, `tsc found type errors:\n${r.stdout}${r.stderr}`);
});
