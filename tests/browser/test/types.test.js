// web/wilddog-video.d.ts compiles (strict) against a use of the original API in both shapes,
// and the SDK file loads as a classic script, as an ES module and through CommonJS.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, '..', '..', '..', 'web');

describe('SDK packaging', () => {
  it('wilddog-video.d.ts type-checks a use of the 2.0 and 2.2+ API (tsc --strict)', () => {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    execFileSync(process.execPath, [tsc, '-p', join(here, '..', 'types', 'tsconfig.json')], { stdio: 'pipe' });
  });

  it('classic script: sets globalThis.wilddogVideo', () => {
    const context = vm.createContext({});
    vm.runInContext(readFileSync(join(web, 'wilddog-video.js'), 'utf8'), context);
    assert.equal(typeof context.wilddogVideo.getInstance, 'function');
    assert.equal(typeof context.wilddogVideo.initialize, 'function');
    assert.equal(typeof context.wilddogVideo.createLocalStream, 'function');
  });

  it('ES module: wilddog-video.mjs exports the same object as default and named members', async () => {
    const mod = await import(join(web, 'wilddog-video.mjs'));
    assert.equal(mod.default, globalThis.wilddogVideo);
    assert.equal(mod.getInstance, globalThis.wilddogVideo.getInstance);
    assert.deepEqual(mod.DIMENSIONS['480p'], { width: 640, height: 480 });
    assert.equal(mod.ERROR_CODES.TOKEN_EXPIRED, 41001);
  });

  it('CommonJS: require() gives the API', () => {
    const api = createRequire(import.meta.url)(join(web, 'wilddog-video.js'));
    assert.equal(typeof api.call, 'function');
  });
});
