// The demo page (web/index.html, served at `/`), driven as a person would: type a uid, sign
// in, type the callee, click Call; the callee clicks Accept; both see the other's video and the
// live stats; hang up. Keeps a screenshot, demo.png (lib/screenshots.js: a temp dir, or
// docs/screenshots/ with WILDDOG_UPDATE_SCREENSHOTS=1).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from '../lib/chromium.js';
import { startServer, uniqueUid } from '../lib/server.js';
import { screenshotPath } from '../lib/screenshots.js';

describe('demo page', () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer();
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function signIn(uid) {
    const page = await browser.newPage();
    await page.goto(`${server.base}/`);
    await page.getByLabel('Your uid').fill(uid);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.locator('#status').filter({ hasText: 'Ready' }).waitFor({ timeout: 10_000, polling: 100 });
    return page;
  }

  it('a person calls another; both see video and stats; hang up', async () => {
    const alice = uniqueUid('alice');
    const bob = uniqueUid('bob');
    const a = await signIn(alice);
    const b = await signIn(bob);
    assert.match(await a.locator('#who').textContent(), new RegExp(alice));

    await a.getByRole('button', { name: 'Preview' }).click();
    await a.waitForFunction(() => document.getElementById('local-video').videoWidth === 640, null, { timeout: 10_000, polling: 100 });

    await a.getByLabel('Callee uid').fill(bob);
    await a.getByLabel('Message for the callee (optional)').fill('hi bob');
    await a.getByRole('button', { name: 'Call', exact: true }).click();

    const banner = b.locator('#incoming');
    await banner.waitFor({ state: 'visible', timeout: 10_000 });
    assert.match(await banner.textContent(), new RegExp(`${alice} is calling: “hi bob”`));
    await b.getByRole('button', { name: 'Accept' }).click();

    for (const page of [a, b]) {
      await page.waitForFunction(() => {
        const v = document.getElementById('remote-video');
        return v.videoWidth === 640 && v.videoHeight === 480 && v.currentTime > 0.5;
      }, null, { timeout: 20_000, polling: 100 });
    }
    await a.locator('#status').filter({ hasText: `In a call with ${bob}` }).waitFor();
    // Live stats, updated every 2 s.
    await a.locator('#stats-remote td[data-k="res"]').filter({ hasText: '640 × 480' }).waitFor({ timeout: 10_000, polling: 100 });
    await a.locator('#stats-local td[data-k="res"]').filter({ hasText: '640 × 480' }).waitFor({ timeout: 10_000, polling: 100 });
    await a.waitForFunction(() => parseInt(document.querySelector('#stats-remote td[data-k="rate"]').textContent, 10) > 0, null, { timeout: 10_000, polling: 100 });
    assert.equal(await a.locator('#stats-remote td[data-k="cand"]').textContent(), 'host');

    await a.screenshot({ path: screenshotPath('demo.png'), fullPage: true });

    await a.getByRole('button', { name: 'Hang up' }).click();
    await b.locator('#status').filter({ hasText: `${alice} hung up.` }).waitFor({ timeout: 10_000, polling: 100 });
    assert.equal(await b.locator('#hangup').isDisabled(), true);
    await a.close();
    await b.close();
  });

  it('a person rejects; the caller sees it', async () => {
    const a = await signIn(uniqueUid('carol'));
    const dave = uniqueUid('dave');
    const b = await signIn(dave);
    await a.getByLabel('Callee uid').fill(dave);
    await a.getByRole('button', { name: 'Call', exact: true }).click();
    await b.locator('#incoming').waitFor({ state: 'visible', timeout: 10_000 });
    await b.getByRole('button', { name: 'Reject' }).click();
    await a.locator('#status').filter({ hasText: `${dave} rejected the call.` }).waitFor({ timeout: 10_000, polling: 100 });
    await a.close();
    await b.close();
  });
});
