// A page of our SDK with an audio-only local stream (`captureAudio: true, captureVideo:
// false`) calls the echo bot (pipelines/echo.toml), in Chromium or Firefox: what the caller
// sees (ACCEPTED, `stream_received` with the audio alone, its own audio back, no video, a
// clean close) and what the bot saw (`called`, no `first_frame`, `closed` with audio only).
// And the other way: call-test sending audio alone (and its audio possibly starting late)
// calls a page with or without a camera, and the page hears it.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { events, expectRemoteVideo, openSdkPage, waitEvent } from './sdk-page.js';
import { pipelineFile } from './gst-runner.js';
import { uniqueUid } from './server.js';

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

/** Runs `fn(path)` with a temporary copy of pipelines/call-test.toml that sends audio alone
 * (its `videotestsrc … ! call.video_sink` line taken out: nothing on the element's
 * `video_sink`); it still has a sink on `video_src` for the video it receives. */
export async function withAudioOnlyCallTest(fn, { audioLateMs = 0 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'wilddog-audio-only-caller-'));
  try {
    const file = join(dir, 'call-test-audio-only.toml');
    const text = readFileSync(pipelineFile('call-test.toml'), 'utf8');
    let audioOnly = text.replace(/^\s*videotestsrc [^\n]*! call\.video_sink\n/m, '');
    assert.notEqual(audioOnly, text, 'call-test.toml has a `videotestsrc … ! call.video_sink` line to take out');
    if (audioLateMs) {
      // audiomixer with a set start time gives its first buffer at that running time, and
      // then one every 10 ms: the encoder and payloader have no caps until then.
      const late = audioOnly.replace(/ ! call\.audio_sink$/m, ` ! audiomixer start-time-selection=set start-time=${audioLateMs * 1_000_000} ! call.audio_sink`);
      assert.notEqual(late, audioOnly, 'call-test.toml has a `… ! call.audio_sink` line');
      audioOnly = late;
    }
    writeFileSync(file, audioOnly);
    return await fn(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A call-test caller (`callerVideo` false: audio alone, {@link withAudioOnlyCallTest}; its
 * audio's first buffer `audioLateMs` after it starts) calls a page of our SDK in `browser`
 * that accepts with its microphone (`pageVideo`: and its camera). What the page's user gets:
 * `stream_received` with the kinds the caller sends, and the caller's tone playing (getStats
 * inbound-rtp audio: packets, samples played out, energy) within a few seconds of it, on
 * the SSRC the offer names; what the runner gets: the page's audio (and video when it has
 * some). `callTest(calleeUid, hangupAfter, file)` starts the runner (`file`: undefined for
 * pipelines/call-test.toml) and returns `{ runner }` (lib/gst-runner.js).
 */
export async function callTestCallsPageWithoutVideo(browser, server, callTest, { callerVideo, pageVideo, audioLateMs = 0, label = 'chromium' }) {
  const calleeUid = uniqueUid(pageVideo ? 'av-callee' : 'audio-callee');
  const callee = await openSdkPage(browser, server, calleeUid);
  await waitEvent(callee, 'connected');
  const local = await callee.evaluate((v) => T.preview({ captureAudio: true, captureVideo: v, dimension: '480p', maxFPS: 15 }), pageVideo);
  assert.deepEqual(local, { audio: 1, video: pageVideo ? 1 : 0 });
  await callee.evaluate(() => (T.onCalled = 'accept'));
  const run = async (file) => {
    const hangupAfter = 6 + 2 * audioLateMs / 1000;
    const { runner } = callTest(calleeUid, hangupAfter, file);
    await waitEvent(callee, 'accepted', { timeout: 15_000 });
    await waitEvent(callee, 'stream_received', { timeout: 10_000 }).catch(async (e) => {
      throw new Error(`${e.message}; ${runner.describe()}`);
    });
    // The page answers: the runner's offer is its remote description.
    const { offer, answer } = await callee.evaluate(() => ({ offer: T.pc().remoteDescription.sdp, answer: T.pc().localDescription.sdp }));
    const sdps = `offer:\n${offer}\nanswer:\n${answer}`;
    assert.equal(direction(mediaSection(offer, 'audio')), 'sendrecv', sdps);
    assert.equal(direction(mediaSection(offer, 'video')), callerVideo ? 'sendrecv' : 'recvonly', sdps);
    assert.equal(direction(mediaSection(answer, 'audio')), 'sendrecv', sdps);
    const answered = { true: { true: 'sendrecv', false: 'recvonly' }, false: { true: 'sendonly', false: 'inactive' } };
    assert.equal(direction(mediaSection(answer, 'video')), answered[callerVideo][pageVideo], sdps);
    const kinds = await callee.evaluate(() => T.remote.stream.getTracks().map((t) => t.kind).sort());
    assert.deepEqual(kinds, callerVideo ? ['audio', 'video'] : ['audio'], `the tracks of the remote stream of \`stream_received\`; ${sdps}`);

    // The caller's 440 Hz tone plays in the page: packets, samples played out, energy.
    const deadline = Date.now() + 5_000 + audioLateMs;
    const read = () => inbound(callee).catch(async (e) => {
      throw new Error(`the page's getStats: ${e.message}; page events: ${(await events(callee)).join(', ')}; ${runner.describe()}`);
    });
    let before = await read();
    while (!(before.audio?.packets > 0) && Date.now() < deadline) {
      await sleep(100);
      before = await read();
    }
    await sleep(1000);
    const after = await read();
    const sent = runner.events.filter((e) => e.event === 'stats').map((e) => e.local.packetsSent);
    const heard = () => `audio in: ${JSON.stringify(before.audio)} → ${JSON.stringify(after.audio)}; the runner's packets sent (stats): ${JSON.stringify(sent)}; ${sdps}\n${runner.describe()}`;
    assert.ok(before.audio?.packets > 0, `the page received no audio from the caller within ${(5000 + audioLateMs) / 1000} s of stream_received (no inbound-rtp: ${!before.audio}): ${heard()}`);
    assert.ok(after.audio.packets - before.audio.packets >= 25, `audio packets in 1 s (Opus: 50): ${heard()}`);
    // totalSamplesReceived and totalAudioEnergy: Chromium has both; Firefox ESR may lack them.
    if (after.audio.samples !== null) assert.ok(after.audio.samples - before.audio.samples >= 24_000, `samples played out in 1 s (48 kHz): ${heard()}`);
    if (after.audio.energy !== null) assert.ok(after.audio.energy > before.audio.energy, `the caller's tone is silent in the page: ${heard()}`);
    // It comes on the SSRC the offer names: Chromium with no video to receive did not
    // route audio of an SSRC the offer did not name (by its payload type), and dropped it.
    const offeredSsrc = (mediaSection(offer, 'audio').match(/\r\na=ssrc:(\d+) /) || [])[1];
    assert.equal(String(after.audio.ssrc), offeredSsrc, `the audio comes on the SSRC the offer's audio section names: ${heard()}`);
    if (callerVideo) await expectRemoteVideo(callee, { width: 640, height: 480, timeout: 10_000 });
    else assert.ok(!(after.video?.packets > 0), `video received from an audio-only caller: ${JSON.stringify(after.video)}`);

    // The runner hangs up after --hangup-after; it got the page's audio, and its video
    // when the page sent some.
    await waitEvent(callee, 'closed', { timeout: (hangupAfter + 10) * 1000 });
    assert.equal(await runner.exit(15_000), 0, runner.describe());
    const closed = runner.events.find((e) => e.event === 'closed');
    assert.equal(closed.media_connected, true, runner.describe());
    assert.ok(closed.received.audio > 0, `the runner got no audio from the page: ${JSON.stringify(closed.received)}; ${runner.describe()}`);
    if (pageVideo) {
      assert.ok(closed.received.video > 0 && runner.names().includes('first_frame'), `the runner got no video from the page: ${JSON.stringify(closed.received)}; ${runner.describe()}`);
    } else {
      assert.ok(closed.received.video === undefined && !runner.names().includes('first_frame'), `the runner got video from an audio-only page: ${runner.describe()}`);
    }
    assert.ok(!runner.names().includes('error'), runner.describe());
    assert.ok(!(await events(callee)).some((e) => e.startsWith('error')), (await events(callee)).join(', '));
    console.log(`${label}: call-test ${callerVideo ? 'audio+video' : 'audio only'} → page ${pageVideo ? 'audio+video' : 'audio only'}: ` +
      `answer video ${direction(mediaSection(answer, 'video'))}; offer's audio a=ssrc ${offeredSsrc}; ` +
      `page audio in over 1 s: ${JSON.stringify(before.audio)} → ${JSON.stringify(after.audio)}; runner received ${JSON.stringify(closed.received)}`);
  };
  if (callerVideo) await run(undefined);
  else await withAudioOnlyCallTest(run, { audioLateMs });
  await callee.close();
}
