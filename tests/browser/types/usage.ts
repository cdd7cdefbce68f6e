// Compiled by test/types.test.js (tsc --noEmit): the SDK's declarations describe how the
// original API is used (2.0 and 2.2+ shapes).
import wilddogVideo = require('../../../web/wilddog-video');

async function seed20(appId: string, token: string, remoteUid: string, el: HTMLVideoElement) {
  const video = wilddogVideo.getInstance().initialize(appId, token, { timeouts: { call: 5000 } });
  const local = await video.createLocalStream({ captureAudio: true, captureVideo: true, dimension: '480p', maxFPS: 15 });
  local.attach(el);
  const conv = video.call(remoteUid, local, 'userData');
  conv.on('response', (status) => {
    const s: 'ACCEPTED' | 'REJECTED' | 'BUSY' | 'TIMEOUT' = status;
    void s;
  });
  conv.on('stream_received', (stream) => stream.attach(el));
  conv.on('error', (e) => console.log(e.code, e.reason));
  conv.on('remote_stats', (s) => console.log(s.width, s.height, s.delay, s.bitReceivedRate));
  conv.on('local_stats', (s) => console.log(s.bitSentRate, s.candidateType));
  conv.close();
  video.on('called', (incoming) => {
    incoming.accept(local).then((c) => c.remoteUid);
  });
  video.on('token_error', (e) => video.setToken(e.code === 41001 ? 'new' : 'x'));
}

function seed22(appId: string, token: string) {
  wilddogVideo.initialize({ appId, token, server: 'wss://example.invalid/ws' });
  const client = wilddogVideo.call();
  return wilddogVideo.createLocalStream({ captureVideo: false }).then((s) =>
    client.call('uid', s, { data: 'x', iceTransportPolicy: 'relay' }).status,
  );
}

void seed20;
void seed22;
