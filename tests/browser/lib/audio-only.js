// A page of our SDK with an audio-only local stream (`captureAudio: true, captureVideo:
// false`) calls the echo bot (pipelines/echo.toml), in Chromium or Firefox: what the caller
// sees (ACCEPTED, `stream_received` with the audio alone, its own audio back, no video, a
// clean close) and what the bot saw (`called`, no `first_frame`, `closed` with audio only).
import assert from 'node:assert/strict';
import { events, waitEvent } from './sdk-page.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The m-section of `kind` in `sdp` (`m=audio …` up to the next `m=`), or ''. */
export function mediaSection(sdp, kind) {
  return sdp.split(/\r\n(?=m=)/).find((p) => p.startsWith(`m=${kind} `)) || '';
}

/** The direction attribute of an m-section (sendrecv when it has none, RFC 3264). */
export function direction(section) {
  return (section.match(/\r\na=(sendrecv|sendonly|recvonly|inactive)(\r|$)/) || [null, 'sendrecv'])[1];
}

/** What the page received so far (getStats inbound-rtp): per kind, its packets, bytes, and
 * for audio the samples and energy played out; `null` for a kind with no inbound-rtp. */
export function inbound(page) {
  return page.evaluate(async () => {
    const out = { audio: null, video: null };
    (await T.pc().getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      out[s.kind] = {
        ssrc: s.ssrc,
        packets: s.packetsReceived || 0,
        bytes: s.bytesReceived || 0,
        samples: s.totalSamplesReceived ?? null,
        energy: s.totalAudioEnergy ?? null,
      };
    });
    return out;
  });
}

/**
 * `page` (our SDK test page, signed in as `callerUid`) creates an audio-only local stream and
 * calls the echo bot `echoUid` (`bot`, lib/gst-runner.js), hears its own audio come back for
 * about a second, and hangs up; logs what the offer and the answer said (`label`: the
 * browser).
 */
export async function callEchoAudioOnly(page, { callerUid, echoUid, bot, label }) {
  const local = await page.evaluate(() => T.preview({ captureAudio: true, captureVideo: false }));
  assert.deepEqual(local, { audio: 1, video: 0 }, 'the local stream has one audio track and no video');
  await page.evaluate((uid) => T.call(uid, 'audio only'), echoUid);

  await waitEvent(page, 'response', { d: 'ACCEPTED', timeout: 20_000 });
  const called = await bot.waitEvent('called');
  assert.equal(called.remote_uid, callerUid);
  assert.equal(called.user_data, 'audio only');
  await waitEvent(page, 'stream_received', { timeout: 15_000 }).catch(async (e) => {
    throw new Error(`${e.message}; ${bot.describe()}`);
  });

  // The SDK's offer sends audio and still asks to receive video (a recvonly transceiver, so
  // that a peer with a camera can show it); the echo has no video of the caller's to send
  // back, and answers that section inactive (not sendonly: it would send nothing on it).
  const { offer, answer, state } = await page.evaluate(() => ({
    offer: T.pc().localDescription.sdp,
    answer: T.pc().remoteDescription?.sdp || '',
    state: T.pc().signalingState,
  }));
  assert.equal(state, 'stable', 'the answer is applied when `stream_received` comes');
  assert.equal(direction(mediaSection(offer, 'audio')), 'sendrecv', offer);
  assert.equal(direction(mediaSection(offer, 'video')), 'recvonly', offer);
  assert.equal(direction(mediaSection(answer, 'audio')), 'sendrecv', answer);
  assert.equal(direction(mediaSection(answer, 'video')), 'inactive', answer);

  // `stream_received` gives the audio alone: no video track the app would wait on.
  const kinds = await page.evaluate(() => T.remote.stream.getTracks().map((t) => `${t.kind}:${t.readyState}`));
  assert.deepEqual(kinds, ['audio:live'], 'the tracks of the remote stream of `stream_received`');

  // The echoed audio comes back and plays: packets, bytes and samples played out grow, and
  // they carry sound (the fake microphones of both browsers make tones: some energy).
  const deadline = Date.now() + 10_000;
  let before = await inbound(page);
  while (!(before.audio?.packets > 0) && Date.now() < deadline) {
    await sleep(100);
    before = await inbound(page);
  }
  await sleep(1000);
  const after = await inbound(page);
  const pcState = await page.evaluate(() => `${T.pc().iceConnectionState}/${T.pc().connectionState}`);
  const heard = `audio in: ${JSON.stringify(before.audio)} → ${JSON.stringify(after.audio)}; page's peer connection ${pcState}; answer:\n${answer}\npage events: ${(await events(page)).join(', ')}; ${bot.describe()}`;
  assert.ok(before.audio?.packets > 0, `no audio came back: ${heard}`);
  assert.ok(after.audio.packets - before.audio.packets >= 25, `audio packets in 1 s (Opus: 50): ${heard}`);
  assert.ok(after.audio.bytes > before.audio.bytes, heard);
  // It comes on the SSRC the answer names: Chrome, with the video section inactive, did not
  // route audio of an unsignaled SSRC by its payload type, and dropped it all.
  const audioSsrc = (mediaSection(answer, 'audio').match(/\r\na=ssrc:(\d+) /) || [])[1];
  assert.equal(String(after.audio.ssrc), audioSsrc, `the audio comes on the SSRC the answer's audio section names: ${heard}`);
  // totalSamplesReceived and totalAudioEnergy: Chromium has both; Firefox ESR may lack them.
  if (after.audio.samples !== null) {
    assert.ok(after.audio.samples - before.audio.samples >= 24_000, `samples played out in 1 s (48 kHz): ${heard}`);
  }
  if (after.audio.energy !== null) assert.ok(after.audio.energy > 0, `the echo is silent: ${heard}`);
  // No video came, and none was waited for.
  assert.ok(!(after.video?.packets > 0), `video received: ${JSON.stringify(after.video)}`);
  assert.ok(!bot.names().includes('first_frame'), `the bot decoded a video frame: ${bot.describe()}`);
  const pageEvents = await events(page);
  assert.deepEqual(pageEvents.filter((e) => e !== 'connected'), ['calling:' + echoUid, 'response:ACCEPTED', 'stream_received'], pageEvents.join(', '));

  await page.evaluate(() => T.conv.close());
  const closed = await bot.waitEvent('closed', { where: (e) => e.conversation_id === called.conversation_id, timeout: 10_000 });
  assert.equal(closed.reason, 'remote-hangup');
  assert.equal(closed.remote_uid, callerUid);
  assert.equal(closed.media_connected, true, JSON.stringify(closed));
  // The bot got the page's audio, and no video.
  assert.ok(closed.received.audio > 0 && closed.received.video === undefined, `the bot's received: ${JSON.stringify(closed.received)}`);
  assert.ok(!bot.names().includes('error'), bot.describe());
  // A fresh pipeline waits for the next call.
  await bot.waitEvent('ready', { from: bot.events.indexOf(closed) + 1, timeout: 10_000 });
  console.log(`${label} audio-only → echo: offer audio ${direction(mediaSection(offer, 'audio'))}, video ${direction(mediaSection(offer, 'video'))}; ` +
    `answer audio ${direction(mediaSection(answer, 'audio'))} (a=ssrc ${audioSsrc}), video ${direction(mediaSection(answer, 'video'))}; ` +
    `audio in over 1 s: ${JSON.stringify(before.audio)} → ${JSON.stringify(after.audio)}`);
}
