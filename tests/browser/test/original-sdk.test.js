// The ORIGINAL service's Web SDK (wilddog-video-call 2.4.1 + wilddog-video-base 2.1.11),
// unmodified, against our server: original ↔ original, original → ours, ours → original.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from '../lib/chromium.js';
import { startServer, uniqueUid } from '../lib/server.js';
import { events, expectRemoteVideo, openSdkPage, waitEvent } from '../lib/sdk-page.js';
import { openOriginalPage } from '../lib/original-sdk.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('the original Web SDK against our server', () => {
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

  async function original(name) {
    const uid = uniqueUid(name);
    const page = await openOriginalPage(browser, server, uid);
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    return { uid, page, original: true };
  }
  async function ours(name) {
    const uid = uniqueUid(name);
    const page = await openSdkPage(browser, server, uid);
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    return { uid, page };
  }

  async function acceptedCall(caller, callee) {
    await callee.page.evaluate(() => (T.onCalled = 'accept'));
    await caller.page.evaluate((uid) => T.call(uid, 'from ' + uid), callee.uid);
    const called = await waitEvent(callee.page, 'called');
    assert.equal(called.d.from, caller.uid);
    await waitEvent(callee.page, 'accepted');
    await waitEvent(caller.page, 'response', { d: 'ACCEPTED' });
    await waitEvent(caller.page, 'stream_received');
    await waitEvent(callee.page, 'stream_received');
    // The original sender leaves Chrome's default `balanced` degradation: it starts at a lower
    // resolution and reaches 640x480 as the bandwidth estimate ramps up (~20 s here).
    const timeout = caller.original || callee.original ? 45_000 : 20_000;
    await expectRemoteVideo(caller.page, { width: 640, height: 480, timeout });
    await expectRemoteVideo(callee.page, { width: 640, height: 480, timeout });
    await caller.page.evaluate(() => T.conv.close());
    await waitEvent(callee.page, 'closed');
    await sleep(200);
    assert.ok(!(await events(caller.page)).includes('closed'), 'the side that closes gets no `closed`');
    await caller.page.close();
    await callee.page.close();
  }

  it('original → original: ACCEPTED, 640x480 both ways, `closed` at the callee', async () => {
    await acceptedCall(await original('orig-a'), await original('orig-b'));
  });

  it('original → ours', async () => {
    await acceptedCall(await original('orig-caller'), await ours('our-callee'));
  });

  it('ours → original', async () => {
    await acceptedCall(await ours('our-caller'), await original('orig-callee'));
  });

  it('original caller, ours rejects: REJECTED', async () => {
    const a = await original('orig-caller');
    const b = await ours('our-callee');
    await b.page.evaluate(() => (T.onCalled = 'reject'));
    await a.page.evaluate((uid) => T.call(uid), b.uid);
    await waitEvent(a.page, 'response', { d: 'REJECTED' });
    await a.page.close();
    await b.page.close();
  });

  it('our caller, original callee busy: BUSY', async () => {
    const a = await ours('our-a');
    const b = await original('orig-b');
    const c = await ours('our-c');
    await b.page.evaluate(() => (T.onCalled = 'accept'));
    await a.page.evaluate((uid) => T.call(uid), b.uid);
    await waitEvent(a.page, 'response', { d: 'ACCEPTED' });
    await c.page.evaluate((uid) => T.call(uid), b.uid);
    await waitEvent(c.page, 'response', { d: 'BUSY' });
    for (const u of [a, b, c]) await u.page.close();
  });
});
