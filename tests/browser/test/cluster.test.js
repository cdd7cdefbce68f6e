// Two signaling nodes on one Redis (`serve --redis`): two Chromium pages, each connected to a
// different node, make a whole call with media through the cluster, as on one node.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from '../lib/chromium.js';
import { startRedis } from '../lib/redis.js';
import { startServer, uniqueUid } from '../lib/server.js';
import { events, expectRemoteVideo, openSdkPage, waitEvent } from '../lib/sdk-page.js';

describe('our SDK across two server nodes on Redis', () => {
  let redis;
  let nodes = [];
  let browser;

  before(async () => {
    redis = await startRedis();
    nodes = [await startServer({ args: ['--redis', redis.url] }), await startServer({ args: ['--redis', redis.url] })];
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    for (const n of nodes) await n.stop();
    await redis?.stop();
  });

  it('a caller on node A and a callee on node B: ACCEPTED, both decode 640x480, `closed` after hang-up', async () => {
    const [a, b] = [uniqueUid('caller'), uniqueUid('callee')];
    // Each page loads the SDK from its node, so it signals through that node.
    const pa = await openSdkPage(browser, nodes[0], a);
    const pb = await openSdkPage(browser, nodes[1], b);
    await waitEvent(pa, 'connected');
    await waitEvent(pb, 'connected');
    for (const p of [pa, pb]) await p.evaluate(() => T.preview());
    // Presence reaches Redis within milliseconds; the metric says so.
    await waitFor(async () => (await metric(nodes[1], 'wilddog_presence_entries')) >= 1, 'node B registered its client');
    await pb.evaluate(() => (T.onCalled = 'accept'));
    await pa.evaluate((uid) => T.call(uid, 'across nodes'), b);

    const called = await waitEvent(pb, 'called');
    assert.deepEqual(called.d, { from: a, data: 'across nodes' });
    await waitEvent(pa, 'response', { d: 'ACCEPTED' });
    await expectRemoteVideo(pa, { width: 640, height: 480 });
    await expectRemoteVideo(pb, { width: 640, height: 480 });
    // The call's frames crossed the nodes: node A relayed them through Redis.
    assert.ok((await metric(nodes[0], 'wilddog_cross_node_frames')) > 0, 'no frame crossed the nodes');

    await pa.evaluate(() => T.conv.close());
    await waitEvent(pb, 'closed');
    assert.deepEqual(await events(pa), ['connected', `calling:${b}`, 'response:ACCEPTED', 'stream_received']);
    assert.deepEqual(await events(pb), ['connected', `called:${JSON.stringify({ from: a, data: 'across nodes' })}`, 'accepted', 'stream_received', 'closed']);
    await pa.close();
    await pb.close();
  });
});

async function metric(node, name) {
  const text = await (await fetch(`${node.base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '_total '));
  return line ? Number(line.split(' ').at(-1)) : NaN;
}

async function waitFor(check, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${timeout} ms`);
}
