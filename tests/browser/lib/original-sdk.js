// The ORIGINAL service's Web SDK (npm wilddog-video-call 2.4.1 + wilddog-video-base 2.1.11,
// CommonJS), bundled for the browser with esbuild at test time into a temp dir (never
// committed), unmodified, and pointed at our server by wrapping the page's WebSocket
// constructor before the SDK loads (its address, wss://vex.wilddog.com:2500/ws, is fixed).
// The page records events in `window.T` with the same shape as lib/sdk-page.js, so the same
// helpers (waitEvent, expectRemoteVideo) drive both.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import assert from 'node:assert/strict';

const HERE = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const ORIGINAL_WS_URL = 'wss://vex.wilddog.com:2500/ws';

let bundled = null;
/** Bundles the original SDK once per process; returns its text. */
export async function originalBundle() {
  if (bundled) return bundled;
  const dir = mkdtempSync(join(tmpdir(), 'wilddog-original-sdk-'));
  try {
    const outfile = join(dir, 'wilddog-original.js');
    await build({
      stdin: {
        // As the package's README has it: the base SDK, then the call service.
        contents: "require('wilddog-video-base/dist/index.js');\nrequire('wilddog-video-call/dist/index.js');\n",
        resolveDir: HERE,
        sourcefile: 'original-entry.js',
      },
      bundle: true,
      platform: 'browser',
      format: 'iife',
      outfile,
      logLevel: 'error',
    });
    bundled = readFileSync(outfile, 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return bundled;
}

const PAGE_SCRIPT = String.raw`
window.T = {
  events: [],
  conv: null,
  local: null,
  localStats: [],
  remoteStats: [],
  log(e, d) { T.events.push({ e, d: d === undefined ? null : d, t: Date.now() }); },
  onCalled: null,
  watch(c) {
    T.conv = c;
    c.on('response', (s) => T.log('response', s));
    c.on('stream_received', (s) => { T.log('stream_received'); T.remote = s; s.attach(document.getElementById('remote')); });
    c.on('closed', () => T.log('closed'));
    c.on('error', (e) => T.log('error', e.code));
    c.on('local_stats', (s) => T.localStats.push(s));
    c.on('remote_stats', (s) => T.remoteStats.push(s));
  },
  async init(appId, token) {
    // The original 2.2+ shape.
    wilddogVideo.initialize({ appId, token });
    T.video = wilddogVideo.call();
    T.video.on('token_error', (e) => T.log('token_error', e.code));
    T.video.on('called', (c) => {
      T.log('called', { from: c.remoteUid, data: c.msg === undefined ? null : c.msg });
      T.watch(c);
      if (T.onCalled === 'accept') c.accept(T.local).then(() => T.log('accepted'), (e) => T.log('accept_failed', String(e && e.message || e)));
      if (T.onCalled === 'reject') c.reject().then(() => T.log('rejected'), (e) => T.log('reject_failed', String(e && e.message || e)));
    });
  },
  async preview(opts) {
    T.local = await wilddogVideo.createLocalStream(opts || { captureAudio: true, captureVideo: true, dimension: '480p', maxFPS: 15 });
    T.local.attach(document.getElementById('local'));
    return { audio: T.local.stream.getAudioTracks().length, video: T.local.stream.getVideoTracks().length };
  },
  call(uid, data) { T.watch(T.video.call(uid, T.local, data)); T.log('calling', uid); },
  pc() { return T.conv && T.conv.rtcClient && T.conv.rtcClient.peer; },
  async framesDecoded() {
    const pc = T.pc();
    if (!pc) return -1;
    let n = 0;
    (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0; });
    return n;
  },
};
// What the original's RTCPeerConnection sees, for failure messages: the descriptions it is
// given and makes, and each legacy \`addstream\` / \`track\` event with the kinds of its stream.
T.pcLog = [];
(function () {
  var Native = window.RTCPeerConnection;
  function Logged(config) {
    var pc = config === undefined ? new Native() : new Native(config);
    var log = function (what, d) { T.pcLog.push({ what: what, d: d, t: Date.now() }); };
    pc.addEventListener('addstream', function (ev) { log('addstream', ev.stream.id + ' ' + ev.stream.getTracks().map(function (t) { return t.kind; }).join('+')); });
    pc.addEventListener('track', function (ev) { log('track', ev.track.kind + ' streams ' + ev.streams.map(function (s) { return s.id + ':' + s.getTracks().map(function (t) { return t.kind; }).join('+'); }).join(',')); });
    pc.addEventListener('iceconnectionstatechange', function () { log('ice', pc.iceConnectionState); });
    var srd = pc.setRemoteDescription.bind(pc);
    pc.setRemoteDescription = function (desc) { log('remote ' + desc.type, desc.sdp); return srd.apply(null, arguments); };
    var sld = pc.setLocalDescription.bind(pc);
    pc.setLocalDescription = function (desc) { log('local ' + (desc && desc.type), desc && desc.sdp); return sld.apply(null, arguments); };
    return pc;
  }
  Logged.prototype = Native.prototype;
  window.RTCPeerConnection = Logged;
})();
// Until connack there is no event in the original API; the socket's first message tells.
T.connected = false;
`;

function wrapperScript(wsUrl) {
  return String.raw`
(function () {
  var Native = window.WebSocket;
  var target = ${JSON.stringify(wsUrl)};
  function Redirected(url, protocols) {
    if (String(url).indexOf('vex.wilddog.com') >= 0) url = target;
    var ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener('message', function (ev) {
      try { var f = JSON.parse(ev.data); if (f.type === 'connack' && f.msg && f.msg.code === 0) window.T && T.log('connected'); } catch (e) {}
    });
    return ws;
  }
  Redirected.prototype = Native.prototype;
  Redirected.CONNECTING = 0; Redirected.OPEN = 1; Redirected.CLOSING = 2; Redirected.CLOSED = 3;
  window.WebSocket = Redirected;
})();`;
}

export const ORIGINAL_TEST_PATH = '/__test__/original.html';

/** Opens a page running the original SDK against `server`, signed in as `uid`. */
export async function openOriginalPage(browser, server, uid) {
  const bundle = await originalBundle();
  browser.pages.put('/__test__/wilddog-original.js', bundle, 'text/javascript; charset=utf-8');
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>original sdk</title></head><body>
<video id="local" muted playsinline autoplay width="320"></video>
<video id="remote" playsinline autoplay width="320"></video>
<script>${wrapperScript(server.wsUrl)}</script>
<script>${PAGE_SCRIPT}</script>
<script src="/__test__/wilddog-original.js"></script>
</body></html>`;
  const url = browser.pages.put(ORIGINAL_TEST_PATH, html);
  const page = await browser.newPage();
  await page.goto(url);
  const ok = await page.evaluate(() => typeof wilddogVideo === 'object' && typeof wilddogVideo.call === 'function');
  assert.ok(ok, 'the original SDK bundle did not set window.wilddogVideo with call()');
  const t = await server.token(uid);
  await page.evaluate(([a, tok]) => T.init(a, tok), [t.appId, t.token]);
  return page;
}
