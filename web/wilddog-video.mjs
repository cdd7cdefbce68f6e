// ES module entry of the wilddog-gst browser SDK: `import wilddogVideo from '/sdk/wilddog-video.mjs'`.
// wilddog-video.js is a classic script (no `export`, so that <script src> works); importing it
// for its side effect evaluates it as a module and sets globalThis.wilddogVideo, which this file
// re-exports. Types: wilddog-video.d.ts.
import './wilddog-video.js';

const wilddogVideo = globalThis.wilddogVideo;
// The default server is the one this module was loaded from (…/sdk/wilddog-video.mjs).
wilddogVideo._setScriptUrl(import.meta.url);

export default wilddogVideo;
export const {
  VERSION,
  getInstance,
  initialize,
  call,
  setToken,
  createLocalStream,
  createClient,
  Client,
  Conversation,
  LocalStream,
  RemoteStream,
  CallStatus,
  DIMENSIONS,
  ERROR_CODES,
} = wilddogVideo;
