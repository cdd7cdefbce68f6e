/*! wilddog-video.js — the wilddog-gst browser SDK (one-to-one video calls), MPL-2.0.
 *
 * The original Wilddog Video Web API (2.0 and 2.2+ shapes) over the Wilddog v2 signaling
 * protocol, with modern WebRTC (addTrack, ontrack, promises). No dependencies, no build step.
 *
 * Loading (one file, three ways):
 *   <script src="/sdk/wilddog-video.js"></script>      classic script: sets the global `wilddogVideo`
 *   import '/sdk/wilddog-video.js';                      ES module, side-effect import: same global
 *   import wilddogVideo from '/sdk/wilddog-video.mjs';   ES module with default + named exports
 *   require('./wilddog-video.js')                        CommonJS (bundlers): module.exports
 * The file contains no `import`/`export` syntax so that it is a valid classic script, and relies
 * on nothing that differs between script and module evaluation (strict mode, `globalThis`).
 *
 * Types: wilddog-video.d.ts. Reference: docs/browser-sdk.md.
 */
(function (root, factory) {
  'use strict';
  // Evaluated twice (as a classic script and as a module on the same page)? Keep the first
  // instance: two SDK singletons on one page would hold two sockets for one user.
  var api = root && root.wilddogVideo && root.wilddogVideo.__wilddogGst ? root.wilddogVideo : factory(root);
  if (typeof module === 'object' && module && module.exports) module.exports = api;
  if (root) root.wilddogVideo = api;
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : typeof window !== 'undefined' ? window : undefined, function (root) {
  'use strict';

  var VERSION = '0.1.0';

  // ---------------------------------------------------------------------------------------
  // Constants
  // ---------------------------------------------------------------------------------------

  /** Error codes of the original SDK. */
  var ERRORS = {
    TOKEN_EXPIRED: { code: 41001, message: 'Token expired.' },
    TOKEN_INVALID: { code: 41002, message: 'Token invalid.' },
    GET_CONFIG_ERROR: { code: 41003, message: 'Get config error: no ICE servers.' },
    CONVERSATION_CONNECT_FAILED: { code: 41004, message: 'Conversation connect failed.' },
    DEVICE_NOT_AVAILABLE: { code: 41005, message: 'Device not available.' },
    OPERATION_TIMEOUT: { code: 41006, message: 'Operation timeout.' },
    CONVERSATION_TIMEOUT: { code: 41007, message: 'Conversation timeout.' },
    APPID_INVALID: { code: 41008, message: 'App does not exist or is not a video app.' }
  };

  /** `dimension` → capture size. */
  var DIMENSIONS = {
    '120p': { width: 160, height: 120 },
    '240p': { width: 320, height: 240 },
    '360p': { width: 480, height: 360 },
    '480p': { width: 640, height: 480 },
    '720p': { width: 1280, height: 720 },
    '1080p': { width: 1920, height: 1080 }
  };

  /** Default video bitrate range (kbps) per dimension, as the original SDK had them. */
  var DEFAULT_BITRATES = {
    '120p': { min: 60, max: 150 },
    '240p': { min: 120, max: 200 },
    '360p': { min: 120, max: 300 },
    '480p': { min: 200, max: 500 },
    '720p': { min: 200, max: 1024 },
    '1080p': { min: 200, max: 1024 }
  };
  var MIN_BITRATE_KBPS = 50;
  var MAX_BITRATE_KBPS = 2048;

  var DEFAULTS = {
    timeouts: { call: 30000, answer: 30000, connect: 30000 },
    heartbeatInterval: 30000,
    statsInterval: 2000,
    reconnect: { initial: 1000, factor: 1.3, max: 30000 },
    debug: false
  };

  /** Caller-side `response` values. */
  var CallStatus = { ACCEPTED: 'ACCEPTED', REJECTED: 'REJECTED', BUSY: 'BUSY', TIMEOUT: 'TIMEOUT' };

  // Frames queued while the socket is down; beyond this the oldest are dropped.
  var MAX_QUEUED_FRAMES = 500;
  // The largest frame sent to a server whose connack does not say (`maxFrameBytes`, our
  // server's extension): our server's default hard limit, over which it closes the socket
  // (1009) and the call would end in TIMEOUT after a reconnect.
  var DEFAULT_FRAME_LIMIT = 1048576;

  /** Bytes of `text` in UTF-8, as the server counts a frame. */
  function utf8Length(text) {
    if (typeof TextEncoder === 'function') return new TextEncoder().encode(text).length;
    return unescape(encodeURIComponent(text)).length;
  }
  // Interruptions, as the Rust clients (signaling/call): a `disconnected` ICE state lasting
  // this long is a lost path; a restart that did not bring it back is made again after
  // RESTART_RETRY_MS; a `restartice` this soon after one answered by a resync asks for an
  // ICE restart; refused resumes are retried after these delays.
  var PATH_LOSS_GRACE_MS = 2000;
  var RESTART_RETRY_MS = 4000;
  var REPEATED_RESTART_MS = 10000;
  var RESUME_RETRY_MS = [500, 1000, 2000, 4000, 8000];

  // The URL this file was loaded from, when known: the server that serves the SDK at
  // /sdk/wilddog-video.js is the one to talk to by default.
  var scriptUrl = (typeof document !== 'undefined' && document.currentScript && document.currentScript.src) || '';

  // ---------------------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------------------

  function makeError(name, detail) {
    var def = ERRORS[name];
    var err = new Error(name + ': ' + (detail || def.message));
    err.code = def.code;
    err.reason = name;
    return err;
  }

  function log(enabled) {
    if (!enabled || typeof console === 'undefined') return;
    var args = Array.prototype.slice.call(arguments, 1);
    args.unshift('[wilddog-video]');
    console.log.apply(console, args);
  }

  function warn() {
    if (typeof console === 'undefined') return;
    var args = Array.prototype.slice.call(arguments);
    args.unshift('[wilddog-video]');
    console.warn.apply(console, args);
  }

  function later(fn) {
    if (typeof queueMicrotask === 'function') queueMicrotask(fn);
    else Promise.resolve().then(fn);
  }

  function merge(base, over) {
    var out = {};
    var k;
    for (k in base) if (Object.prototype.hasOwnProperty.call(base, k)) out[k] = base[k];
    if (over) for (k in over) if (Object.prototype.hasOwnProperty.call(over, k) && over[k] !== undefined) out[k] = over[k];
    return out;
  }

  var PUSH_CHARS = '-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz';

  /** A 20-character time-ordered random id, as the original's conversation ids. */
  function newId() {
    var now = Date.now();
    var out = '';
    for (var i = 0; i < 8; i++) {
      out = PUSH_CHARS.charAt(now % 64) + out;
      now = Math.floor(now / 64);
    }
    var rnd = new Uint8Array(12);
    if (root && root.crypto && root.crypto.getRandomValues) root.crypto.getRandomValues(rnd);
    else for (var j = 0; j < 12; j++) rnd[j] = Math.floor(Math.random() * 256);
    for (var r = 0; r < 12; r++) out += PUSH_CHARS.charAt(rnd[r] % 64);
    return out;
  }

  function defaultServer() {
    var base = null;
    if (/\/sdk\/wilddog-video\.m?js(\?.*)?(#.*)?$/.test(scriptUrl)) {
      try { base = new URL(scriptUrl); } catch (e) { base = null; }
    }
    if (!base && typeof location !== 'undefined' && location.host) base = location;
    if (!base || !base.host) return null;
    return (base.protocol === 'https:' ? 'wss://' : 'ws://') + base.host + '/ws';
  }

  /** ICE servers as the signaling server sends them (`url` and/or `urls`) → RTCIceServer[]. */
  function toRtcIceServers(list) {
    var out = [];
    if (!Array.isArray(list)) return out;
    for (var i = 0; i < list.length; i++) {
      var s = list[i];
      if (!s || typeof s !== 'object') continue;
      var urls = s.urls || s.url;
      if (!urls) continue;
      var arr = Array.isArray(urls) ? urls : [urls];
      var isTurn = arr.some(function (u) { return /^turns?:/i.test(String(u)); });
      // Browsers throw on a TURN entry without credentials; leave such an entry out.
      if (isTurn && (s.username == null || s.credential == null)) continue;
      var entry = { urls: urls };
      if (s.username != null) entry.username = s.username;
      if (s.credential != null) entry.credential = s.credential;
      out.push(entry);
    }
    return out;
  }

  /** The distinct `a=fingerprint` values of an SDP: which DTLS association it is for (a
   * stopped section repeats none). */
  function fingerprints(sdp) {
    var seen = {};
    (String(sdp).match(/^a=fingerprint:.*$/gm) || []).forEach(function (l) { seen[l.trim()] = true; });
    return Object.keys(seen).sort().join('|');
  }

  /** The ICE servers for an incoming call: the call's own, else the connack's, with the TURN
   * credential the server added applied to TURN entries. */
  function iceServersForCall(msg, connackServers) {
    var list = Array.isArray(msg.iceServers) && msg.iceServers.length ? msg.iceServers : connackServers;
    var cred = msg.turnCredential;
    return (list || []).map(function (s) {
      var copy = merge(s, null);
      var urls = [].concat(s.urls || s.url || []);
      var isTurn = s.type === 'turn' || urls.some(function (u) { return /^turns?:/i.test(String(u)); });
      if (cred && isTurn) {
        copy.username = cred.username;
        copy.credential = cred.credential;
      }
      return copy;
    });
  }

  /** The user of a TURN REST user name (`expiry:user`), or null. */
  function restUser(name) {
    var m = /^(\d+):(.*)$/.exec(String(name || ''));
    return m ? m[2] : null;
  }

  /** ICE servers with a TURN credential our server minted for us later than theirs (at the
   * `accept`, or in a `turn` frame: extensions; theirs may have expired since, on a page open
   * for a day or in a long call). Only entries in the TURN REST form (`expiry:user`) for the
   * same user take it; a fixed entry keeps its own. */
  function withFreshTurnCredential(servers, cred) {
    var user = cred && restUser(cred.username);
    return (servers || []).map(function (s) {
      var copy = merge(s, null);
      if (user !== null && user !== undefined && restUser(s.username) === user) {
        copy.username = cred.username;
        copy.credential = cred.credential;
      }
      return copy;
    });
  }

  /** Puts `b=AS:kbps` in every video m-section of an SDP (replacing any b=AS/b=TIAS there). */
  function setVideoBandwidth(sdp, kbps) {
    if (!kbps) return sdp;
    var lines = sdp.split('\r\n');
    var out = [];
    var inVideo = false;
    var inserted = false;
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (line.indexOf('m=') === 0) {
        inVideo = line.indexOf('m=video') === 0;
        inserted = false;
        out.push(line);
        continue;
      }
      if (inVideo && (line.indexOf('b=AS:') === 0 || line.indexOf('b=TIAS:') === 0)) continue;
      out.push(line);
      if (inVideo && !inserted && line.indexOf('c=') === 0) {
        out.push('b=AS:' + kbps);
        inserted = true;
      }
    }
    return out.join('\r\n');
  }

  /** Adds `x-google-max-bitrate` (kbps) to the video codecs' fmtp lines. A Chrome peer reads
   * it from the description we send: it sends us no more. No `x-google-min-bitrate`, though
   * the original SDK sends its minBitrateBps there: Chrome takes it as the floor of its
   * estimate, and at the 200 kbit/s default a tab kept sending 200 kbit/s of video into a
   * 250 kbit/s link (its availableOutgoingBitrate stood at 200,000) and the picture froze. */
  function setVideoBitrateCap(sdp, maxKbps) {
    return setVideoFmtpParams(sdp, { 'x-google-max-bitrate': maxKbps });
  }

  /** Sets fmtp parameters (name: value; a falsy value leaves the name alone) on every video
   * codec of an SDP, replacing any value there; a codec without an fmtp line gets one. */
  function setVideoFmtpParams(sdp, values) {
    var names = Object.keys(values).filter(function (n) { return values[n]; });
    if (!names.length) return sdp;
    var lines = sdp.split('\r\n');
    var inVideo = false;
    var codecPts = {};
    var i;
    for (i = 0; i < lines.length; i++) {
      if (lines[i].indexOf('m=') === 0) inVideo = lines[i].indexOf('m=video') === 0;
      var m = inVideo && /^a=rtpmap:(\d+) (VP8|VP9|H264|AV1)\/90000/i.exec(lines[i]);
      if (m) codecPts[m[1]] = i;
    }
    var params = names.map(function (n) { return n + '=' + values[n]; });
    var seen = {};
    for (i = 0; i < lines.length; i++) {
      var f = /^a=fmtp:(\d+) (.*)$/.exec(lines[i]);
      if (f && Object.prototype.hasOwnProperty.call(codecPts, f[1])) {
        var kept = f[2].split(';').filter(function (p) { return p && names.indexOf(p.split('=')[0]) < 0; });
        lines[i] = 'a=fmtp:' + f[1] + ' ' + kept.concat(params).join(';');
        seen[f[1]] = true;
      }
    }
    // Codecs without an fmtp line get one after their rtpmap, from the last so indexes hold.
    Object.keys(codecPts).filter(function (pt) { return !seen[pt]; })
      .sort(function (a, b) { return codecPts[b] - codecPts[a]; })
      .forEach(function (pt) { lines.splice(codecPts[pt] + 1, 0, 'a=fmtp:' + pt + ' ' + params.join(';')); });
    return lines.join('\r\n');
  }

  function clampKbps(v) {
    return Math.max(MIN_BITRATE_KBPS, Math.min(MAX_BITRATE_KBPS, Math.round(v)));
  }

  // ---------------------------------------------------------------------------------------
  // Emitter
  // ---------------------------------------------------------------------------------------

  function Emitter() {
    this._listeners = Object.create(null);
  }

  Emitter.prototype.on = function (event, listener) {
    if (typeof listener !== 'function') throw new TypeError('on(' + event + '): the listener must be a function');
    (this._listeners[event] || (this._listeners[event] = [])).push({ fn: listener, once: false });
    return this;
  };

  Emitter.prototype.once = function (event, listener) {
    if (typeof listener !== 'function') throw new TypeError('once(' + event + '): the listener must be a function');
    (this._listeners[event] || (this._listeners[event] = [])).push({ fn: listener, once: true });
    return this;
  };

  /** `off(event, listener)` removes one listener; `off(event)` all of that event; `off()` all. */
  Emitter.prototype.off = function (event, listener) {
    if (event === undefined) {
      this._listeners = Object.create(null);
      return this;
    }
    var list = this._listeners[event];
    if (!list) return this;
    if (!listener) {
      delete this._listeners[event];
      return this;
    }
    this._listeners[event] = list.filter(function (l) { return l.fn !== listener; });
    return this;
  };

  Emitter.prototype._emit = function (event) {
    var list = this._listeners[event];
    if (!list || !list.length) return false;
    var args = Array.prototype.slice.call(arguments, 1);
    this._listeners[event] = list.filter(function (l) { return !l.once; });
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].fn.apply(this, args);
      } catch (e) {
        // An application listener that throws must not break the SDK's state machine.
        if (typeof console !== 'undefined') console.error('[wilddog-video] a "' + event + '" listener threw:', e);
      }
    }
    return true;
  };

  function inherit(Child, Parent) {
    Child.prototype = Object.create(Parent.prototype);
    Child.prototype.constructor = Child;
  }

  // ---------------------------------------------------------------------------------------
  // Streams
  // ---------------------------------------------------------------------------------------

  /** Base of LocalStream and RemoteStream: a MediaStream and the elements it is attached to. */
  function Stream(mediaStream) {
    /** The underlying MediaStream. */
    this.stream = mediaStream;
    this._elements = [];
  }

  /** Shows the stream in a <video> (or <audio>) element. A local stream plays muted. */
  Stream.prototype.attach = function (element) {
    if (!element || typeof element !== 'object' || !('srcObject' in element)) {
      throw new TypeError('attach(element): element must be a <video> or <audio> element');
    }
    element.autoplay = true;
    element.playsInline = true;
    if (this.type === 'LocalStream') element.muted = true;
    element.srcObject = this.stream;
    if (this._elements.indexOf(element) < 0) this._elements.push(element);
    var p = element.play && element.play();
    if (p && typeof p.catch === 'function') {
      p.catch(function (e) {
        if (e && e.name === 'NotAllowedError' && !element.muted) {
          // Autoplay policy: without a user gesture a page may not play sound. Show the video
          // muted rather than nothing; the user can unmute.
          warn('autoplay with sound was blocked; playing muted', e.message);
          element.muted = true;
          element.play().catch(function () {});
        }
      });
    }
    return this;
  };

  /** Removes the stream from `element`, or from every element it is attached to. */
  Stream.prototype.detach = function (element) {
    var list = element ? [element] : this._elements.slice();
    for (var i = 0; i < list.length; i++) {
      if (list[i] && list[i].srcObject === this.stream) list[i].srcObject = null;
      var idx = this._elements.indexOf(list[i]);
      if (idx >= 0) this._elements.splice(idx, 1);
    }
    return this;
  };

  /** Switches the stream's audio tracks on or off. */
  Stream.prototype.enableAudio = function (enabled) {
    if (typeof enabled !== 'boolean') throw new TypeError('enableAudio(enabled): enabled must be a boolean');
    this.stream.getAudioTracks().forEach(function (t) { t.enabled = enabled; });
    return this;
  };

  /** Switches the stream's video tracks on or off (a disabled video track sends black). */
  Stream.prototype.enableVideo = function (enabled) {
    if (typeof enabled !== 'boolean') throw new TypeError('enableVideo(enabled): enabled must be a boolean');
    this.stream.getVideoTracks().forEach(function (t) { t.enabled = enabled; });
    return this;
  };

  /** Stops every track and detaches from every element. */
  Stream.prototype.close = function () {
    this.stream.getTracks().forEach(function (t) { t.stop(); });
    this.detach();
    this.closed = true;
    return this;
  };

  /** The camera/microphone stream made by createLocalStream(). */
  function LocalStream(mediaStream, settings) {
    Stream.call(this, mediaStream);
    this.type = 'LocalStream';
    this.captureAudio = settings.captureAudio;
    this.captureVideo = settings.captureVideo;
    this.dimension = settings.dimension;
    this.maxFPS = settings.maxFPS;
    this.minBitrateBps = settings.minBitrateBps;
    this.maxBitrateBps = settings.maxBitrateBps;
  }
  inherit(LocalStream, Stream);

  /** Cycles to the next camera, keeping the stream's settings and attachments. */
  LocalStream.prototype.switchCamera = function () {
    var self = this;
    var current = self.stream.getVideoTracks()[0];
    var currentId = current && current.getSettings ? current.getSettings().deviceId : undefined;
    return navigator.mediaDevices.enumerateDevices().then(function (devices) {
      var cams = devices.filter(function (d) { return d.kind === 'videoinput'; });
      if (cams.length < 2) return false;
      var idx = cams.map(function (c) { return c.deviceId; }).indexOf(currentId);
      var next = cams[(idx + 1) % cams.length];
      var dim = DIMENSIONS[self.dimension];
      return navigator.mediaDevices.getUserMedia({
        video: { deviceId: { exact: next.deviceId }, width: { ideal: dim.width }, height: { ideal: dim.height }, frameRate: { ideal: self.maxFPS, max: self.maxFPS } }
      }).then(function (ms) {
        var track = ms.getVideoTracks()[0];
        if (current) {
          self.stream.removeTrack(current);
          current.stop();
        }
        self.stream.addTrack(track);
        if (self._onTrackReplaced) self._onTrackReplaced(track);
        return true;
      });
    });
  };

  /** The other party's media, given by `stream_received`. */
  function RemoteStream(mediaStream) {
    Stream.call(this, mediaStream);
    this.type = 'RemoteStream';
  }
  inherit(RemoteStream, Stream);

  function createLocalStream(options) {
    if (options === undefined) options = {};
    if (!options || typeof options !== 'object') throw new TypeError('createLocalStream(options): options must be an object');
    ['captureAudio', 'captureVideo'].forEach(function (k) {
      if (options[k] !== undefined && typeof options[k] !== 'boolean') throw new TypeError('createLocalStream: options.' + k + ' must be a boolean');
    });
    var captureAudio = options.captureAudio !== false;
    var captureVideo = options.captureVideo !== false;
    if (!captureAudio && !captureVideo) throw new Error('createLocalStream: at least one of captureAudio and captureVideo must be true');
    var dimension = options.dimension === undefined ? '480p' : options.dimension;
    if (!Object.prototype.hasOwnProperty.call(DIMENSIONS, dimension)) {
      throw new Error('createLocalStream: dimension must be one of ' + Object.keys(DIMENSIONS).join(', '));
    }
    var maxFPS = options.maxFPS === undefined ? 15 : options.maxFPS;
    if (typeof maxFPS !== 'number' || !(maxFPS >= 1 && maxFPS <= 30)) throw new Error('createLocalStream: maxFPS must be a number from 1 to 30');
    ['minBitrateBps', 'maxBitrateBps'].forEach(function (k) {
      if (options[k] !== undefined && (typeof options[k] !== 'number' || !isFinite(options[k]))) throw new TypeError('createLocalStream: options.' + k + ' must be a number (kbps)');
    });
    var def = DEFAULT_BITRATES[dimension];
    var maxKbps = options.maxBitrateBps ? clampKbps(options.maxBitrateBps) : def.max;
    var minKbps = options.minBitrateBps ? clampKbps(options.minBitrateBps) : Math.min(def.min, maxKbps);
    if (minKbps > maxKbps) minKbps = maxKbps;
    var settings = {
      captureAudio: captureAudio,
      captureVideo: captureVideo,
      dimension: dimension,
      maxFPS: maxFPS,
      minBitrateBps: minKbps,
      maxBitrateBps: maxKbps
    };
    if (typeof navigator === 'undefined' || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return Promise.reject(makeError('DEVICE_NOT_AVAILABLE', 'navigator.mediaDevices is missing: camera and microphone need a secure page (https:// or http://localhost)'));
    }
    var dim = DIMENSIONS[dimension];
    var constraints = {
      audio: captureAudio,
      video: captureVideo ? { width: { ideal: dim.width }, height: { ideal: dim.height }, frameRate: { ideal: maxFPS, max: maxFPS } } : false
    };
    return navigator.mediaDevices.getUserMedia(constraints).then(function (ms) {
      return new LocalStream(ms, settings);
    }, function (e) {
      throw makeError('DEVICE_NOT_AVAILABLE', (e && e.name ? e.name + ': ' : '') + (e && e.message ? e.message : String(e)));
    });
  }

  // ---------------------------------------------------------------------------------------
  // Conversation
  // ---------------------------------------------------------------------------------------

  // Conversation.status values.
  var S_CALLING = 'calling'; // caller: `call` sent, waiting for the answer
  var S_RINGING = 'ringing'; // callee: `called` raised, waiting for accept()/reject()
  var S_ACCEPTED = 'accepted'; // accepted, media connecting
  var S_CONNECTED = 'connected'; // ICE connected
  var S_CLOSED = 'closed';

  /** One call between this client and `remoteUid`. Made by `call()` or given by `called`. */
  function Conversation(client, o) {
    Emitter.call(this);
    this._client = client;
    /** Conversation id (`cid`). */
    this.conversationId = o.cid;
    /** The other party's uid. */
    this.remoteUid = o.remoteUid;
    /** The caller's user data (for a received call: what the caller passed to call()). */
    this.data = o.data;
    /** True on the caller's side. */
    this.isCaller = !o.incoming;
    /** calling | ringing | accepted | connected | closed */
    this.status = o.incoming ? S_RINGING : S_CALLING;
    this.localStream = o.localStream || null;
    /** The other party's stream once received. */
    this.remoteStream = null;
    this._iceServers = o.iceServers || null;
    this._iceTransportPolicy = o.iceTransportPolicy || undefined;
    this._pc = null;
    this._remoteMedia = null;
    this._pendingCandidates = [];
    this._timers = {};
    this._statsTimer = null;
    this._lastStats = null;
    this._lossTicks = null;
    this._minRtt = null;
    this._restartId = null;
    this._needRestart = false;
    this._sdpChain = Promise.resolve();
    // Interruptions (docs/protocol-extensions.md, "Client behaviour"): a reconnect happened
    // during the media; when the path was found lost; refused resumes retried so far; when a
    // `restartice` was last answered by a resync.
    this._reconnected = false;
    this._pathLostAt = 0;
    this._resumeRetries = 0;
    this._resyncedAt = 0;
    // Callee: an offer for a new peer connection is being applied to a new RTCPeerConnection.
    this._renewing = false;
  }
  inherit(Conversation, Emitter);

  Object.defineProperty(Conversation.prototype, 'cid', { get: function () { return this.conversationId; } });

  /** Registers a listener. `stream_received` is sticky: a listener added after the stream came
   * still gets it (once, asynchronously). */
  Conversation.prototype.on = function (event, listener) {
    Emitter.prototype.on.call(this, event, listener);
    if (event === 'stream_received' && this.remoteStream) {
      var self = this;
      var rs = this.remoteStream;
      later(function () {
        var still = (self._listeners[event] || []).some(function (l) { return l.fn === listener; });
        if (still) listener.call(self, rs);
      });
    }
    return this;
  };

  Conversation.prototype.once = function (event, listener) {
    if (event === 'stream_received' && this.remoteStream) {
      if (typeof listener !== 'function') throw new TypeError('once(' + event + '): the listener must be a function');
      var self = this;
      var rs = this.remoteStream;
      later(function () { listener.call(self, rs); });
      return this;
    }
    return Emitter.prototype.once.call(this, event, listener);
  };

  /** Callee: answers yes. Resolves with this conversation. */
  Conversation.prototype.accept = function (localStream) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (self.isCaller || self.status !== S_RINGING) {
        reject(new Error('accept(): the conversation is ' + self.status + ', not ringing'));
        return;
      }
      var ls = asLocalStream(localStream);
      if (!ls) {
        reject(new TypeError('accept(localStream): localStream must be a LocalStream from createLocalStream()'));
        return;
      }
      self.localStream = ls;
      self._clearTimer('answer');
      try {
        self._createPeer();
      } catch (e) {
        self._fail(makeError('CONVERSATION_CONNECT_FAILED', 'RTCPeerConnection: ' + e.message), true);
        reject(e);
        return;
      }
      self.status = S_ACCEPTED;
      self._client._send({ type: 'accept', cid: self.conversationId, to: self.remoteUid, msg: {} });
      self._startTimer('connect', self._client.options.timeouts.connect, function () {
        self._fail(makeError('CONVERSATION_CONNECT_FAILED', 'media did not connect in time'), true);
      });
      resolve(self);
    });
  };

  /** Callee: answers no; the caller gets `response` REJECTED. */
  Conversation.prototype.reject = function () {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (self.isCaller || self.status !== S_RINGING) {
        reject(new Error('reject(): the conversation is ' + self.status + ', not ringing'));
        return;
      }
      self._client._send({ type: 'reject', cid: self.conversationId, to: self.remoteUid, msg: {} });
      self._teardown();
      resolve(self);
    });
  };

  /** Cancels a ringing call or hangs up; the other side gets `closed`, this side does not. */
  Conversation.prototype.close = function () {
    if (this.status === S_CLOSED) return;
    this._client._send({ type: 'bye', cid: this.conversationId, to: this.remoteUid, msg: {} });
    this._teardown();
  };

  Conversation.prototype._closeByNewCall = function () {
    if (this.status === S_RINGING && !this.isCaller) this.reject().catch(function () {});
    else this.close();
  };

  Conversation.prototype._startTimer = function (name, ms, fn) {
    this._clearTimer(name);
    if (!(ms > 0)) return;
    this._timers[name] = setTimeout(fn, ms);
  };

  Conversation.prototype._clearTimer = function (name) {
    if (this._timers[name]) {
      clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  };

  Conversation.prototype._teardown = function () {
    this.status = S_CLOSED;
    for (var name in this._timers) clearTimeout(this._timers[name]);
    this._timers = {};
    if (this._statsTimer) {
      clearInterval(this._statsTimer);
      this._statsTimer = null;
    }
    if (this._pc) {
      var pc = this._pc;
      this._pc = null;
      pc.onicecandidate = pc.ontrack = pc.oniceconnectionstatechange = null;
      try { pc.close(); } catch (e) { /* already closed */ }
    }
    this._pendingCandidates = [];
    this._client._conversationEnded(this);
  };

  /** Ends the conversation with an `error` event. `notify` sends `bye` so the peer stops too. */
  Conversation.prototype._fail = function (err, notify) {
    if (this.status === S_CLOSED) return;
    if (notify) this._client._send({ type: 'bye', cid: this.conversationId, to: this.remoteUid, msg: {} });
    this._teardown();
    this._emit('error', err);
  };

  /** Caller: sends the `call` frame and starts the no-answer timer. */
  Conversation.prototype._startCalling = function (localStream, data) {
    var self = this;
    var client = this._client;
    client._send(function () {
      var msg = {};
      if (data !== undefined) msg.data = data;
      if (client._iceServers.length) msg.iceServers = client._iceServers;
      return { type: 'call', cid: self.conversationId, to: self.remoteUid, msg: msg };
    });
    this._startTimer('call', client.options.timeouts.call, function () {
      if (self.status !== S_CALLING) return;
      // Stop the callee's ringing too: it gets `closed`.
      client._send({ type: 'bye', cid: self.conversationId, to: self.remoteUid, msg: {} });
      self._teardown();
      self._emit('response', CallStatus.TIMEOUT);
    });
  };

  /** Callee: starts the no-answer timer of a received call. */
  Conversation.prototype._startRinging = function () {
    var self = this;
    this._startTimer('answer', this._client.options.timeouts.answer, function () {
      if (self.status !== S_RINGING) return;
      self._fail(makeError('CONVERSATION_TIMEOUT', 'the call was not answered in time'), false);
    });
  };

  Conversation.prototype._createPeer = function () {
    var self = this;
    var servers = toRtcIceServers(this._iceServers || this._client._iceServers);
    var config = { iceServers: servers };
    if (this._iceTransportPolicy === 'relay') config.iceTransportPolicy = 'relay';
    var pc;
    try {
      pc = new RTCPeerConnection(config);
    } catch (e) {
      // A server entry the browser refuses (a bad URL) must not stop the call on loopback.
      warn('RTCPeerConnection refused the ICE servers, using none:', e.message);
      pc = new RTCPeerConnection({});
    }
    this._pc = pc;
    var ms = this.localStream.stream;
    var kinds = { audio: false, video: false };
    ms.getTracks().forEach(function (t) {
      pc.addTrack(t, ms);
      kinds[t.kind] = true;
    });
    if (this.isCaller) {
      // Receive both kinds even when sending only one.
      if (!kinds.audio) pc.addTransceiver('audio', { direction: 'recvonly' });
      if (!kinds.video) pc.addTransceiver('video', { direction: 'recvonly' });
    }
    this.localStream._onTrackReplaced = function (track) {
      if (!self._pc) return;
      self._pc.getSenders().forEach(function (s) {
        if (s.track && s.track.kind === track.kind) s.replaceTrack(track).catch(function () {});
      });
    };
    pc.onicecandidate = function (ev) {
      var c = ev.candidate;
      if (!c || !c.candidate) return;
      self._client._send({
        type: 'candidate',
        cid: self.conversationId,
        to: self.remoteUid,
        msg: { sdpMLineIndex: c.sdpMLineIndex, sdpMid: c.sdpMid, sdp: c.candidate }
      });
    };
    pc.ontrack = function (ev) { self._onTrack(ev); };
    pc.oniceconnectionstatechange = function () { self._onIceState(pc.iceConnectionState); };
    return pc;
  };

  Conversation.prototype._onTrack = function (ev) {
    if (!this._remoteMedia) {
      this._remoteMedia = (ev.streams && ev.streams[0]) || new MediaStream();
    }
    var media = this._remoteMedia;
    // A renewed peer connection's track replaces the old one of its kind in the stream the
    // application holds (its <video> goes on).
    media.getTracks().forEach(function (t) {
      if (t.kind === ev.track.kind && t !== ev.track) media.removeTrack(t);
    });
    if (media.getTracks().indexOf(ev.track) < 0) media.addTrack(ev.track);
    if (!this.remoteStream) {
      var self = this;
      this.remoteStream = new RemoteStream(media);
      // After the current setRemoteDescription's other `track` events.
      later(function () {
        if (self.status !== S_CLOSED) self._emit('stream_received', self.remoteStream);
      });
    }
  };

  Conversation.prototype._onIceState = function (state) {
    var self = this;
    var log_ = this._client.options.debug;
    log(log_, 'ice', this.conversationId, state);
    if (state === 'connected' || state === 'completed') {
      this._clearTimer('disconnected');
      if (this.status === S_ACCEPTED) {
        this.status = S_CONNECTED;
        this._clearTimer('connect');
      }
      if (this._pathLostAt) {
        log(log_, 'media path back after', Date.now() - this._pathLostAt, 'ms');
        this._pathLostAt = 0;
        this._clearTimer('path');
        this._clearTimer('restart');
      }
      this._startStats();
    } else if (state === 'disconnected') {
      // Browsers flap through `disconnected`; a path still gone after a moment is lost.
      if (this.status === S_CONNECTED) {
        this._startTimer('disconnected', PATH_LOSS_GRACE_MS, function () { self._pathLost(); });
      }
    } else if (state === 'failed') {
      if (this.status === S_CONNECTED) this._pathLost();
      else if (this.status === S_ACCEPTED) this._fail(makeError('CONVERSATION_CONNECT_FAILED', 'ICE failed'), true);
    }
  };

  /** Whether the media is connected and its path not lost. */
  Conversation.prototype._mediaHealthy = function () {
    var ice = this._pc && this._pc.iceConnectionState;
    return this.status === S_CONNECTED && !this._pathLostAt && (ice === 'connected' || ice === 'completed');
  };

  /** The path of a connected call is lost: restart ICE until it is back, or give up with
   * CONVERSATION_CONNECT_FAILED (41004) after the connect timeout. */
  Conversation.prototype._pathLost = function () {
    var self = this;
    if (this._pathLostAt || this.status !== S_CONNECTED) return;
    this._pathLostAt = Date.now();
    log(this._client.options.debug, 'media path lost: restarting ICE');
    this._startTimer('path', this._client.options.timeouts.connect, function () {
      self._fail(makeError('CONVERSATION_CONNECT_FAILED', 'the media path did not come back'), true);
    });
    this._iceRestart();
  };

  /** Caller: an offer with an ICE restart; callee: `restartice`. Again after RESTART_RETRY_MS
   * while the path is lost. */
  Conversation.prototype._iceRestart = function () {
    var self = this;
    if (this.status === S_CLOSED) return;
    if (this.isCaller) this._sendOffer('restart');
    else this._client._send({ type: 'restartice', cid: this.conversationId, to: this.remoteUid, msg: {} });
    this._startTimer('restart', RESTART_RETRY_MS, function () {
      if (self._pathLostAt) self._iceRestart();
    });
  };

  /** Replaces the RTCPeerConnection by a new one (same local tracks, same remote stream for
   * the application) to follow a peer that restarted on a new peer connection. */
  Conversation.prototype._renewPeer = function () {
    var old = this._pc;
    if (old) {
      old.onicecandidate = old.ontrack = old.oniceconnectionstatechange = null;
      try { old.close(); } catch (e) { /* closed */ }
    }
    this._pc = null;
    this._lastStats = null;
    this._lossTicks = null;
    this._minRtt = null;
    log(this._client.options.debug, 'new peer connection for a restart', this.conversationId);
    return this._createPeer();
  };

  /** Sender settings: the video cap from the local stream (maxBitrateBps, kbps), and the
   * video scale and Opus cap `_fitSendSize` chose. The browser's own degradation is kept
   * (for a camera, Chrome and Firefox keep the frame rate and lower the resolution under
   * pressure, then raise it again): with `maintain-resolution`, a detailed 640x480 picture
   * at 500 kbit/s went out at 2 fps, and on a 250 kbit/s link each 30-40 KB key frame filled
   * the link for a second. */
  Conversation.prototype._applySenderBitrate = function () {
    var self = this;
    var pc = this._pc;
    var kbps = this.localStream && this.localStream.maxBitrateBps;
    if (!pc || !pc.getSenders) return;
    var scale = this._sendScale || 0;
    pc.getSenders().forEach(function (sender) {
      if (!sender.track || !sender.getParameters) return;
      try {
        var params = sender.getParameters();
        if (!params.encodings || !params.encodings.length) return;
        if (sender.track.kind === 'audio') {
          // Opus gives way too on a link this narrow (as wilddogcall's does).
          if (self._audioCapped) params.encodings[0].maxBitrate = AUDIO_CAPPED_BPS;
          else if (params.encodings[0].maxBitrate) delete params.encodings[0].maxBitrate;
          else return;
        } else {
          if (kbps) params.encodings[0].maxBitrate = kbps * 1000;
          params.encodings[0].scaleResolutionDownBy = SEND_SCALES[scale];
        }
        sender.setParameters(params).catch(function (e) { warn('setParameters:', e && e.message); });
      } catch (e) { /* not negotiated yet */ }
    });
  };

  /** The SDP as sent to the peer: our stream's video cap as `b=AS` and as Chrome's
   * x-google-max-bitrate, which a Chrome peer applies to what it sends us. */
  Conversation.prototype._sdpForPeer = function (sdp) {
    var ls = this.localStream;
    if (!ls) return sdp;
    return setVideoBitrateCap(setVideoBandwidth(sdp, ls.maxBitrateBps), ls.maxBitrateBps);
  };

  /** The peer's SDP as applied here: `x-google-start-bitrate` at our stream's cap on the
   * video codecs, so that Chrome starts sending at the dimension's rate and size. From its
   * default start, 300 kbit/s, the demo page showed 640x480 after 22 s instead of 6 s; from
   * the cap, its estimator backs off within a second on a slower link. */
  Conversation.prototype._sdpFromPeer = function (sdp) {
    var ls = this.localStream;
    if (!ls || !ls.maxBitrateBps) return sdp;
    return setVideoFmtpParams(sdp, { 'x-google-start-bitrate': ls.maxBitrateBps });
  };

  Conversation.prototype._chain = function (fn) {
    var self = this;
    this._sdpChain = this._sdpChain.then(fn).catch(function (e) {
      if (self.status === S_CLOSED) return;
      warn('negotiation failed:', e && e.message ? e.name + ': ' + e.message : e);
      self._fail(makeError('CONVERSATION_CONNECT_FAILED', e && e.message), true);
    });
    return this._sdpChain;
  };

  /** Caller: create and send an offer. `kind`: `first`; `resync` (after a reconnect while the
   * media is healthy: a new offer on the same transport, which a GStreamer callee answers
   * with its current answer, touching no media); `restart` (an ICE restart). Both of the
   * latter carry a `restartId`. */
  Conversation.prototype._sendOffer = function (kind) {
    var self = this;
    // The older boolean form: true, a re-offer.
    if (kind === true) kind = 'resync';
    else if (kind === false || kind === undefined) kind = 'first';
    var restart = kind === 'restart';
    return this._chain(function () {
      var pc = self._pc;
      if (!pc) return;
      if (pc.signalingState !== 'stable') {
        // An offer is in flight: restart once its answer is in.
        if (kind !== 'first') self._needRestart = self._needRestart || kind;
        return;
      }
      var restartId = kind === 'first' ? null : newId();
      if (restartId) self._restartId = restartId;
      return pc.createOffer(restart ? { iceRestart: true } : {}).then(function (offer) {
        if (self._pc !== pc) return;
        return pc.setLocalDescription(offer).then(function () {
          var msg = { sdp: self._sdpForPeer(offer.sdp) };
          if (restartId) msg.restartId = restartId;
          self._client._send({ type: 'offer', cid: self.conversationId, to: self.remoteUid, msg: msg });
          self._applySenderBitrate();
        });
      });
    });
  };

  Conversation.prototype._addPendingCandidates = function () {
    var pc = this._pc;
    var list = this._pendingCandidates;
    this._pendingCandidates = [];
    list.forEach(function (c) {
      pc.addIceCandidate(c).catch(function (e) { warn('addIceCandidate failed:', e.message); });
    });
  };

  /** A conversation frame from the other party (cid and sender already checked). */
  Conversation.prototype._onFrame = function (type, msg) {
    var self = this;
    msg = msg && typeof msg === 'object' ? msg : {};
    switch (type) {
      case 'accept':
        if (!this.isCaller || this.status !== S_CALLING) return;
        this._clearTimer('call');
        this.status = S_ACCEPTED;
        this._emit('response', CallStatus.ACCEPTED);
        if (this.status !== S_ACCEPTED) return; // a listener closed it
        // Set for the call from now on: `turn` frames keep its credential fresh.
        this._iceServers = this._iceServers || this._client._iceServers;
        if (msg.turnCredential && typeof msg.turnCredential === 'object') {
          this._iceServers = withFreshTurnCredential(this._iceServers, msg.turnCredential);
        }
        try {
          this._createPeer();
        } catch (e) {
          this._fail(makeError('CONVERSATION_CONNECT_FAILED', 'RTCPeerConnection: ' + e.message), true);
          return;
        }
        this._startTimer('connect', this._client.options.timeouts.connect, function () {
          self._fail(makeError('CONVERSATION_CONNECT_FAILED', 'media did not connect in time'), true);
        });
        this._sendOffer('first');
        return;
      case 'reject':
      case 'busy':
      case 'unreachable':
        if (!this.isCaller || this.status !== S_CALLING) return;
        this._teardown();
        this._emit('response', type === 'reject' ? CallStatus.REJECTED : type === 'busy' ? CallStatus.BUSY : CallStatus.TIMEOUT);
        return;
      case 'offer':
        if (this.isCaller || !this._pc || typeof msg.sdp !== 'string') return;
        // A peer that restarted on a new peer connection (a GStreamer endpoint does) offers a
        // new DTLS fingerprint: answer it from a new RTCPeerConnection too. The browser could
        // follow in place, but would send its DTLS handshake for the new association over the
        // old, dead path first and retry only seconds later. Candidates that come meanwhile
        // wait for it.
        var renew = this._pc.remoteDescription && fingerprints(this._pc.remoteDescription.sdp) !== fingerprints(msg.sdp);
        if (renew) this._renewing = true;
        if (this._pathLostAt && this._timers.restart) {
          // The caller's restart: give it its time before asking again.
          this._startTimer('restart', RESTART_RETRY_MS, function () { if (self._pathLostAt) self._iceRestart(); });
        }
        this._chain(function () {
          var pc = self._pc;
          if (!pc) return;
          if (renew) pc = self._renewPeer();
          return pc.setRemoteDescription({ type: 'offer', sdp: self._sdpFromPeer(msg.sdp) }).then(function () {
            self._renewing = false;
            self._addPendingCandidates();
            return pc.createAnswer();
          }).then(function (answer) {
            return pc.setLocalDescription(answer).then(function () {
              var out = { sdp: self._sdpForPeer(answer.sdp) };
              if (msg.restartId != null) out.restartId = msg.restartId;
              self._client._send({ type: 'answer', cid: self.conversationId, to: self.remoteUid, msg: out });
              self._applySenderBitrate();
            });
          });
        });
        return;
      case 'answer':
        if (!this.isCaller || !this._pc || typeof msg.sdp !== 'string') return;
        // A callee that restarted on a new peer connection (a GStreamer endpoint does) answers
        // with a new DTLS fingerprint. Firefox cannot follow a new fingerprint on its DTLS
        // transport, and a browser that can keeps waiting on the old association: offer again
        // from a new RTCPeerConnection (the callee answers that from a new one too).
        var renewCaller = this._pc.remoteDescription && fingerprints(this._pc.remoteDescription.sdp) !== fingerprints(msg.sdp);
        if (renewCaller) this._renewing = true;
        this._chain(function () {
          var pc = self._pc;
          if (!pc || pc.signalingState !== 'have-local-offer') return;
          // An answer to an older (restart) offer: ignore it. The original callee does not echo
          // restartId, so an answer without one is taken.
          if (msg.restartId != null && self._restartId != null && msg.restartId !== self._restartId) return;
          if (renewCaller) {
            self._renewPeer();
            self._renewing = false;
            self._needRestart = false;
            self._sendOffer('restart');
            return;
          }
          return pc.setRemoteDescription({ type: 'answer', sdp: self._sdpFromPeer(msg.sdp) }).then(function () {
            self._addPendingCandidates();
            if (self._needRestart) {
              var again = self._needRestart;
              self._needRestart = false;
              self._sendOffer(again);
            }
          });
        });
        return;
      case 'candidate': {
        var line = typeof msg.sdp === 'string' ? msg.sdp : typeof msg.candidate === 'string' ? msg.candidate : '';
        if (!line) return; // end of candidates
        var init = { candidate: line, sdpMid: msg.sdpMid != null ? msg.sdpMid : null, sdpMLineIndex: msg.sdpMLineIndex != null ? msg.sdpMLineIndex : null };
        if (init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMLineIndex = 0;
        if (this._pc && this._pc.remoteDescription && !this._renewing) {
          this._pc.addIceCandidate(init).catch(function (e) { warn('addIceCandidate failed:', e.message); });
        } else if (this.status !== S_CLOSED && this._pendingCandidates.length < 200) {
          this._pendingCandidates.push(init);
        }
        return;
      }
      case 'bye':
        if (this.status === S_CLOSED) return;
        this._teardown();
        this._emit('closed');
        return;
      case 'restartice':
        if (!this.isCaller || !this._pc) return;
        // Our own restart is under way (and made again if it fails): another one now would
        // only start it over.
        if (this._pathLostAt && this._timers.restart) return;
        // A resync first while our media is healthy (the callee may only have reconnected);
        // asked again soon after, the callee's path is lost: restart ICE.
        if (this._mediaHealthy() && Date.now() - this._resyncedAt > REPEATED_RESTART_MS) {
          this._resyncedAt = Date.now();
          this._sendOffer('resync');
        } else {
          this._resyncedAt = 0;
          this._sendOffer('restart');
        }
        return;
      default:
    }
  };

  /** A fresh TURN credential for our uid (a `turn` frame, a reconnect's connack): the
   * conversation's TURN entries minted for us take it, and so does the peer connection, for
   * its next gathering (an ICE restart: `createOffer({iceRestart})` or the answer to the
   * peer's restart gather with the servers of its configuration; a renewed peer connection
   * is made from `_iceServers`). */
  Conversation.prototype._freshTurnCredential = function (cred) {
    if (this.status === S_CLOSED || !this._iceServers) return;
    this._iceServers = withFreshTurnCredential(this._iceServers, cred);
    var pc = this._pc;
    if (!pc || typeof pc.setConfiguration !== 'function') return;
    try {
      var config = pc.getConfiguration();
      config.iceServers = toRtcIceServers(this._iceServers);
      pc.setConfiguration(config);
    } catch (e) {
      warn('setConfiguration refused the fresh TURN credential:', e && e.message);
    }
  };

  /** After a new connack: `resume` the conversation (the server binds it to this socket, or
   * re-creates it after a restart of its own), then re-offer (caller: an ICE restart if the
   * path is not healthy, else a resync) or ask for one (callee: `restartice`). */
  Conversation.prototype._onReconnected = function () {
    if (!this._pc || (this.status !== S_ACCEPTED && this.status !== S_CONNECTED)) return;
    this._reconnected = true;
    this._resumeRetries = 0;
    this._clearTimer('resume');
    this._resume();
  };

  Conversation.prototype._resume = function () {
    if (this.status === S_CLOSED) return;
    this._client._send({
      type: 'resume',
      cid: this.conversationId,
      to: this.remoteUid,
      msg: { role: this.isCaller ? 'caller' : 'callee' }
    });
    if (this.isCaller) this._sendOffer(this._mediaHealthy() ? 'resync' : 'restart');
    else this._client._send({ type: 'restartice', cid: this.conversationId, to: this.remoteUid, msg: {} });
  };

  /** The server refused a frame of this conversation (`not_party`: the conversation is still
   * held by our old, half-open socket; `unknown_conversation`): after a reconnect, `resume`
   * and restart again with backoff; when the last retry is refused too, the call is over. */
  Conversation.prototype._onRefused = function (code) {
    var self = this;
    if (!this._reconnected) {
      // Not after a reconnect: the server does not know our call any more (it ended while
      // we were away).
      if (code === 'unknown_conversation') {
        this._teardown();
        this._emit('closed');
      }
      return;
    }
    if (this._timers.resume) return;
    if (this._resumeRetries >= RESUME_RETRY_MS.length) {
      this._teardown();
      this._emit('closed');
      return;
    }
    this._startTimer('resume', RESUME_RETRY_MS[this._resumeRetries], function () {
      delete self._timers.resume;
      self._resumeRetries++;
      self._resume();
    });
  };

  Conversation.prototype._startStats = function () {
    if (this._statsTimer || this.status === S_CLOSED) return;
    var self = this;
    var interval = this._client.options.statsInterval;
    if (!(interval > 0)) return;
    this._statsTimer = setInterval(function () { self._collectStats(); }, interval);
  };

  Conversation.prototype._collectStats = function () {
    var self = this;
    var pc = this._pc;
    if (!pc) return;
    pc.getStats().then(function (report) {
      if (self._pc !== pc || self.status === S_CLOSED) return;
      var now = Date.now();
      var out = { bytes: 0, videoBytes: 0, videoPackets: 0, videoLost: 0, videoRtt: null, frames: 0, width: 0, height: 0, fps: null, packets: 0, target: null, nack: 0, pli: 0, fir: 0, rtx: 0, lost: 0, sourceFps: null };
      var inn = { bytes: 0, frames: 0, width: 0, height: 0, fps: null, packetsLost: 0, jitter: 0, packets: 0, nack: 0, pli: 0, fir: 0, repaired: 0, jbDelay: 0, jbCount: 0 };
      var pairId = null;
      var pairs = [];
      var byId = {};
      report.forEach(function (s) {
        byId[s.id] = s;
        if (s.type === 'outbound-rtp') {
          out.bytes += s.bytesSent || 0;
          out.packets += s.packetsSent || 0;
          out.nack += s.nackCount || 0;
          out.pli += s.pliCount || 0;
          out.fir += s.firCount || 0;
          out.rtx += s.retransmittedPacketsSent || 0;
          if (s.kind === 'video' && s.targetBitrate != null) out.target = s.targetBitrate;
          if (s.kind === 'video') {
            out.videoBytes += s.bytesSent || 0;
            out.videoPackets += s.packetsSent || 0;
            out.frames += s.framesEncoded || 0;
            if (s.frameWidth) out.width = s.frameWidth;
            if (s.frameHeight) out.height = s.frameHeight;
            if (s.framesPerSecond != null) out.fps = s.framesPerSecond;
          }
        } else if (s.type === 'media-source' && s.kind === 'video') {
          if (s.framesPerSecond != null) out.sourceFps = s.framesPerSecond;
        } else if (s.type === 'remote-inbound-rtp') {
          out.lost += Math.max(0, s.packetsLost || 0);
          if (s.kind === 'video') {
            out.videoLost += Math.max(0, s.packetsLost || 0);
            if (s.roundTripTime != null) out.videoRtt = s.roundTripTime;
          }
        } else if (s.type === 'inbound-rtp') {
          inn.bytes += s.bytesReceived || 0;
          inn.packetsLost += s.packetsLost || 0;
          inn.packets += s.packetsReceived || 0;
          inn.nack += s.nackCount || 0;
          inn.pli += s.pliCount || 0;
          inn.fir += s.firCount || 0;
          inn.repaired += s.retransmittedPacketsReceived || 0;
          if (s.kind === 'video') {
            inn.jbDelay = s.jitterBufferDelay || 0;
            inn.jbCount = s.jitterBufferEmittedCount || 0;
            inn.frames += s.framesDecoded || 0;
            if (s.frameWidth) inn.width = s.frameWidth;
            if (s.frameHeight) inn.height = s.frameHeight;
            if (s.framesPerSecond != null) inn.fps = s.framesPerSecond;
            if (s.jitter != null) inn.jitter = Math.round(s.jitter * 1000);
          }
        } else if (s.type === 'transport' && s.selectedCandidatePairId) {
          pairId = s.selectedCandidatePairId;
        } else if (s.type === 'candidate-pair') {
          pairs.push(s);
        }
      });
      var pair = pairId ? byId[pairId] : null;
      if (!pair) pair = pairs.filter(function (p) { return p.nominated && p.state === 'succeeded'; })[0] || null;
      var localCand = pair && byId[pair.localCandidateId];
      var remoteCand = pair && byId[pair.remoteCandidateId];
      var last = self._lastStats;
      var secs = last ? (now - last.time) / 1000 : 0;
      function rate(bytes, prev) { return secs > 0 ? Math.max(0, Math.round(((bytes - prev) * 8) / 1000 / secs)) : 0; }
      function fps(frames, prev, reported) {
        if (reported != null) return Math.round(reported);
        return secs > 0 ? Math.max(0, Math.round((frames - prev) / secs)) : 0;
      }
      var estimate = pair && pair.availableOutgoingBitrate != null ? Math.round(pair.availableOutgoingBitrate / 1000) : 0;
      var local = {
        bytesSent: out.bytes,
        bitSentRate: rate(out.bytes, last ? last.outBytes : 0),
        fps: fps(out.frames, last ? last.outFrames : 0, out.fps),
        width: out.width,
        height: out.height,
        candidateType: (localCand && localCand.candidateType) || '',
        framesEncoded: out.frames,
        packetsSent: out.packets,
        // What the network does to what we send (as wilddogcall's wilddog-stats says it):
        // the video encoder's target and the browser's estimate of the path (kbps), packets
        // the peer reports lost, NACKs / PLIs / FIRs it sent us, packets resent.
        targetBitrate: out.target != null ? Math.round(out.target / 1000) : 0,
        estimatedBitrate: estimate,
        packetsLost: out.lost,
        nackReceived: out.nack,
        pliReceived: out.pli,
        firReceived: out.fir,
        retransmitted: out.rtx
      };
      var remote = {
        id: self.remoteUid,
        bytesReceived: inn.bytes,
        bitReceivedRate: rate(inn.bytes, last ? last.inBytes : 0),
        fps: fps(inn.frames, last ? last.inFrames : 0, inn.fps),
        delay: pair && pair.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : 0,
        width: inn.width,
        height: inn.height,
        candidateType: (remoteCand && remoteCand.candidateType) || '',
        framesDecoded: inn.frames,
        packetsLost: inn.packetsLost,
        jitter: inn.jitter,
        // What it does to what we receive: NACKs / PLIs / FIRs we sent, packets a
        // retransmission repaired, the video jitterbuffer's delay over the period (ms).
        packetsReceived: inn.packets,
        packetsRepaired: inn.repaired,
        nackSent: inn.nack,
        pliSent: inn.pli,
        firSent: inn.fir,
        jitterBufferLatency: last && inn.jbCount > last.jbCount
          ? Math.round(((inn.jbDelay - last.jbDelay) / (inn.jbCount - last.jbCount)) * 1000) : 0
      };
      self._lastStats = {
        time: now, outBytes: out.bytes, outVideoBytes: out.videoBytes, outVideoPackets: out.videoPackets, outVideoLost: out.videoLost,
        inBytes: inn.bytes, outFrames: out.frames, inFrames: inn.frames,
        jbDelay: inn.jbDelay, jbCount: inn.jbCount
      };
      self._emit('local_stats', local);
      if (self.status !== S_CLOSED) self._emit('remote_stats', remote);
      self._checkQuality(local);
      // The video's loss as the peer reports it (Firefox's fractionLost read 0 in most
      // reports while its packetsLost grew), and the frames it encoded a second.
      // Over the last NO_TARGET_LOSS_TICKS ticks: a receiver report covers a second or more,
      // so one tick's share swung with where the reports fell (5 % random loss read over
      // 10 % in single ticks, and a step down followed).
      var ticks = self._lossTicks = (self._lossTicks || []).concat(last ? [{
        lost: Math.max(0, out.videoLost - last.outVideoLost),
        sent: Math.max(0, out.videoPackets - last.outVideoPackets)
      }] : []).slice(-NO_TARGET_LOSS_TICKS);
      var sentPackets = ticks.reduce(function (n, t) { return n + t.sent; }, 0);
      var lostPackets = ticks.reduce(function (n, t) { return n + t.lost; }, 0);
      // The round trip the peer's last report gave, over the lowest this connection saw:
      // the queue our packets wait in.
      if (out.videoRtt != null && (self._minRtt == null || out.videoRtt < self._minRtt)) self._minRtt = out.videoRtt;
      self._fitSendSize(local, {
        videoKbps: rate(out.videoBytes, last ? last.outVideoBytes : out.videoBytes),
        lossFraction: ticks.length === NO_TARGET_LOSS_TICKS && sentPackets > 0 ? lostPackets / sentPackets : 0,
        encodedFps: secs > 0 ? Math.max(0, (out.frames - last.outFrames) / secs) : null,
        sourceFps: out.sourceFps,
        rttRise: out.videoRtt != null ? out.videoRtt - self._minRtt : 0
      });
    }).catch(function (e) { log(self._client.options.debug, 'getStats failed', e); });
  };

  /**
   * `quality`, as wilddogcall's `wilddog-quality`: 'low' when the browser's video encoder
   * target (which follows its congestion control) falls below what the local stream's
   * dimension needs (its minBitrateBps, kbps), 'good' when it is back. Only on a change.
   * A browser that reports no target (Firefox) gets it from the size ladder instead
   * (`_fitSendSize`).
   */
  Conversation.prototype._checkQuality = function (local) {
    var ls = this.localStream;
    if (!ls || !ls.captureVideo || !local.targetBitrate || this.status === S_CLOSED) return;
    this._setQuality(local.targetBitrate < neededKbps(ls), local);
  };

  /** Emits `quality` when `low` changed. */
  Conversation.prototype._setQuality = function (low, local) {
    if (low === !!this._qualityLow) return;
    this._qualityLow = low;
    this._emit('quality', {
      quality: low ? 'low' : 'good',
      estimatedBitrate: local.estimatedBitrate,
      targetBitrate: local.targetBitrate,
      neededBitrate: neededKbps(this.localStream),
      width: local.width,
      height: local.height,
      fps: local.fps
    });
  };

  /** How far our video sender may scale its picture down (scaleResolutionDownBy): 480p →
   * 360p → 240p → 240x180 → 120p, as wilddogcall's ladder. */
  var SEND_SCALES = [1, 4 / 3, 2, 8 / 3, 4];
  /** Chrome's own adaptation (for a camera: keep the frame rate, lower the size) went no
   * further than 320x240 with a 4:3 picture here (getStats, 250 kbit/s). */
  var BROWSER_MIN_PIXELS = 320 * 240;
  /** The share of the stream's minBitrateBps, scaled to a size, under which the encoder's
   * target alone moves the picture to a smaller size at once (above wilddogcall's 0.75:
   * Chrome's VP8 at its highest quantizers still made 1-2 KB frames of a detailed 160x120
   * picture): on a 250 kbit/s link its target fell to 30 kbit/s within 2 s, and its own
   * adaptation took 10 s to leave 640x480, a key frame of 30-40 KB at a time. */
  var SEND_SIZE_FIT = 1.5;
  /** While the picture sent is this small (240x180) or smaller, by our scale or the
   * browser's own, Opus is capped at AUDIO_CAPPED_BPS: its 32 kbit/s and headers were 40 % of
   * a 250 kbit/s link that both directions share. */
  var AUDIO_CAPPED_PIXELS = 240 * 180;
  var AUDIO_CAPPED_BPS = 16000;
  /** A browser that reports no encoder target (Firefox: no `targetBitrate`, no
   * `availableOutgoingBitrate`) moves by what the peer reports instead. The video's loss
   * (the packets remote-inbound-rtp reports lost over those sent, over the last
   * NO_TARGET_LOSS_TICKS ticks) over NO_TARGET_LOSS_DOWN takes the picture one step down
   * when the link is full: the round trip has grown by NO_TARGET_RTT_RISE (a queue) or the
   * encoder starves (under two thirds of maxFPS); or when it lasts NO_TARGET_LOSSY_TICKS
   * ticks in a row. Loss alone is not enough: Firefox sends about 15 packets a second of
   * a 320x240 picture, and at 5 % random loss (RTT a few ms, 15 fps encoded) the three
   * ticks' share read over 10 % often enough to step down in one run out of nine. A frame
   * rate encoded under two thirds of maxFPS at 320x240 or less takes it one step down too;
   * back up one step after NO_TARGET_UP_TICKS ticks at the whole frame rate with loss
   * under NO_TARGET_LOSS_UP. Firefox at a 250 kbit/s cap shared by both directions kept
   * 320x240 and its 32 kbit/s of Opus, lost a quarter of its packets, and the peer decoded
   * nothing for 20 s; there the round trip grew by 480 to 690 ms and Firefox encoded 4 to
   * 9 fps at 320x240. */
  /** After a step down for a starving encoder, how long the size it left is not gone back
   * to (ms): the target that allows it did not make it encode the frames. */
  var SLOW_SIZE_HOLD_MS = 30000;
  var NO_TARGET_LOSS_DOWN = 0.1;
  var NO_TARGET_LOSS_UP = 0.02;
  var NO_TARGET_UP_TICKS = 5;
  var NO_TARGET_LOSS_TICKS = 3;
  var NO_TARGET_RTT_RISE = 0.1;
  var NO_TARGET_LOSSY_TICKS = 6;

  /**
   * Takes the sent size below where the browser's own adaptation stops, and back. Chrome
   * keeps the frame rate by lowering the size, but not under 320x240 here: a detailed
   * picture that still did not fit there went out at 1 to 3 fps, and at 250 kbit/s each key
   * frame of 10-15 KB overflowed the link. So, on a stats tick (`statsInterval`):
   * - down to the largest size whose share of minBitrateBps the target covers
   *   (SEND_SIZE_FIT), when it does not cover the current one;
   * - else down one scale step under the size sent when the sent frame rate is under two
   *   thirds of maxFPS at or under that floor, or at any size when the camera gives the whole
   *   frame rate (media-source) and the encoder drops frames (then to the size its frame rate
   *   says fits, and that size is not gone back to for SLOW_SIZE_HOLD_MS: Chrome starts a
   *   detailed 640x480 picture at 1 to 3 fps, a key frame at a time, and its own adaptation
   *   took 10 s to reach 320x240), whatever reason the browser gives (a smaller
   *   picture helps a busy CPU too; when this rule skipped 'cpu', a CI run stayed at 240x180
   *   and 1 fps for the whole 18 s of a 250 kbit/s test, this rule being the only one left
   *   to move it);
   * - up one step when the frame rate is whole (90 %) and the encoder's target is at least
   *   2.5 times what the video sends (the next size needs up to 2.25 times) and covers the
   *   next size's share, two ticks in a row;
   * then two ticks for the browser to settle. Opus is capped while the picture sent is at
   * most AUDIO_CAPPED_PIXELS. A browser with no target in its stats (Firefox) moves by the
   * loss its peer reports with a queue or a starving encoder instead (NO_TARGET_LOSS_DOWN).
   */
  Conversation.prototype._fitSendSize = function (local, video) {
    var ls = this.localStream;
    if (!ls || !ls.captureVideo || !local.width || this.status === S_CLOSED) return;
    var audioCapped = local.width * local.height <= AUDIO_CAPPED_PIXELS;
    if (audioCapped !== !!this._audioCapped) {
      this._audioCapped = audioCapped;
      this._applySenderBitrate();
    }
    if (this._sendSettle > 0) { this._sendSettle--; return; }
    var at = this._sendScale || 0;
    var to = at;
    var fullWidth = DIMENSIONS[ls.dimension].width;
    var needed = neededKbps(ls);
    var need = function (i) { return needed / (SEND_SCALES[i] * SEND_SCALES[i]); };
    // The encoder drops frames the camera gives it (a camera in low light gives fewer: not
    // this). Chrome says 'none' as the reason then: its encoder's frame dropper.
    var encoderStarving = local.fps < (2 / 3) * ls.maxFPS && video.sourceFps != null && video.sourceFps >= 0.9 * ls.maxFPS;
    var slow = local.fps < (2 / 3) * ls.maxFPS && (local.width * local.height <= BROWSER_MIN_PIXELS || encoderStarving);
    var oneStepUnder = function () {
      while (to < SEND_SCALES.length - 1 && fullWidth / SEND_SCALES[to] >= local.width - 1) to++;
    };
    if (!local.targetBitrate) {
      // Firefox's framesPerSecond said 12 to 15 while it encoded 4 frames a second.
      var fps = video.encodedFps != null ? video.encodedFps : local.fps;
      var loss = video.lossFraction || 0;
      var starving = fps < (2 / 3) * ls.maxFPS;
      this._lossyTicks = loss > NO_TARGET_LOSS_DOWN ? (this._lossyTicks || 0) + 1 : 0;
      var congested = loss > NO_TARGET_LOSS_DOWN &&
        ((video.rttRise || 0) >= NO_TARGET_RTT_RISE || starving || this._lossyTicks >= NO_TARGET_LOSSY_TICKS);
      if (congested || (starving && local.width * local.height <= BROWSER_MIN_PIXELS)) {
        oneStepUnder();
        this._sendScaleUp = 0;
      } else if (at > 0 && fps >= 0.9 * ls.maxFPS && loss < NO_TARGET_LOSS_UP) {
        this._sendScaleUp = (this._sendScaleUp || 0) + 1;
        if (this._sendScaleUp >= NO_TARGET_UP_TICKS) to = at - 1;
      } else {
        this._sendScaleUp = 0;
      }
    } else if (local.targetBitrate < SEND_SIZE_FIT * need(at)) {
      // The target alone says the size cannot be kept.
      while (to < SEND_SCALES.length - 1 && local.targetBitrate < SEND_SIZE_FIT * need(to)) to++;
      this._sendScaleUp = 0;
    } else if (slow) {
      oneStepUnder();
      if (encoderStarving) {
        // As many pixels as the frames it managed carry, twice over: at 2 to 3 fps of 15
        // at 640x480, 320x240 at once rather than a step per settle (Chrome took 10 s).
        var fit = local.width * local.height * Math.max(local.fps, 1) / ls.maxFPS * 2;
        var fullHeight = DIMENSIONS[ls.dimension].height;
        var pixels = function (i) { return (fullWidth / SEND_SCALES[i]) * (fullHeight / SEND_SCALES[i]); };
        while (to < SEND_SCALES.length - 1 && pixels(to) > fit) to++;
      }
      this._sendScaleUp = 0;
      // The size it starved at is not tried again for a while (see SLOW_SIZE_HOLD_MS).
      this._slowAt = { scale: at, time: Date.now() };
    } else if (at > 0 && local.fps >= 0.9 * ls.maxFPS && local.targetBitrate >= 2.5 * video.videoKbps &&
        local.targetBitrate >= SEND_SIZE_FIT * need(at - 1) &&
        !(this._slowAt && this._slowAt.scale >= at - 1 && Date.now() - this._slowAt.time < SLOW_SIZE_HOLD_MS)) {
      this._sendScaleUp = (this._sendScaleUp || 0) + 1;
      if (this._sendScaleUp >= 2) to = at - 1;
    } else {
      this._sendScaleUp = 0;
    }
    if (to === at) return;
    this._sendScale = to;
    // Without an encoder target (Firefox) the link is judged by the ladder's own inputs:
    // the picture taken down for the link (loss with a queue, or frames the encoder could
    // not make) is what 'low' says, and back at its full size, 'good'.
    if (!local.targetBitrate && ls.captureVideo) this._setQuality(to > 0, local);
    this._sendScaleUp = 0;
    this._lossyTicks = 0;
    this._sendSettle = 2;
    log(this._client.options.debug, 'video sent at 1/' + SEND_SCALES[to].toFixed(2) + ' of its size:', local.fps, 'fps at', local.width + 'x' + local.height,
      local.targetBitrate ? 'target ' + local.targetBitrate + ' kbit/s'
        : 'no target: ' + Math.round((video.lossFraction || 0) * 100) + ' % lost, ' + (video.encodedFps != null ? video.encodedFps.toFixed(1) : '?') +
          ' fps encoded, round trip +' + Math.round((video.rttRise || 0) * 1000) + ' ms');
    this._applySenderBitrate();
  };

  /** What a local stream's full dimension needs, kbps: its minBitrateBps, or the
   * dimension's default floor. */
  function neededKbps(ls) {
    return ls.minBitrateBps || DEFAULT_BITRATES[ls.dimension].min;
  }

  function asLocalStream(s) {
    if (s instanceof LocalStream) return s;
    if (typeof MediaStream !== 'undefined' && s instanceof MediaStream) {
      return new LocalStream(s, { captureAudio: s.getAudioTracks().length > 0, captureVideo: s.getVideoTracks().length > 0, dimension: '480p', maxFPS: 15, minBitrateBps: 0, maxBitrateBps: 0 });
    }
    if (s && typeof s === 'object' && typeof MediaStream !== 'undefined' && s.stream instanceof MediaStream) return s;
    return null;
  }

  // ---------------------------------------------------------------------------------------
  // Client: one signaling connection, one conversation at a time
  // ---------------------------------------------------------------------------------------

  // Client.state values.
  var C_IDLE = 'idle';
  var C_CONNECTING = 'connecting';
  var C_READY = 'ready';
  var C_RECONNECTING = 'reconnecting';
  var C_STOPPED = 'stopped';

  function normalizeOptions(o) {
    o = o || {};
    var opts = merge(DEFAULTS, o);
    opts.timeouts = merge(DEFAULTS.timeouts, o.timeouts);
    opts.reconnect = merge(DEFAULTS.reconnect, o.reconnect);
    return opts;
  }

  /** A signaling client: `call()`, `on('called')`, `on('token_error')`, `setToken()`. */
  function Client(config) {
    Emitter.call(this);
    this.appId = null;
    this.token = null;
    this.options = normalizeOptions(null);
    /** idle | connecting | ready | reconnecting | stopped */
    this.state = C_IDLE;
    this._ws = null;
    this._queue = [];
    this._iceServers = [];
    this._maxFrameBytes = DEFAULT_FRAME_LIMIT;
    this._conversation = null;
    this._reconnectDelay = this.options.reconnect.initial;
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    this._heartbeatCounter = 0;
    this._everReady = false;
    this._serverUrl = null;
    if (config) this.configure(config);
  }
  inherit(Client, Emitter);

  /** Sets appId, token and options without connecting. */
  Client.prototype.configure = function (config) {
    if (!config || typeof config !== 'object') throw new TypeError('initialize(options): options must be an object');
    if (typeof config.appId !== 'string' || !config.appId) throw new TypeError('initialize: appId must be a non-empty string');
    if (typeof config.token !== 'string' || !config.token) throw new TypeError('initialize: token must be a non-empty string');
    var o = merge(this.options, config);
    delete o.appId;
    delete o.token;
    o.timeouts = merge(this.options.timeouts, config.timeouts);
    o.reconnect = merge(this.options.reconnect, config.reconnect);
    this.options = o;
    this.appId = config.appId;
    this.token = config.token;
    this._reconnectDelay = this.options.reconnect.initial;
    return this;
  };

  /** 2.0 shape: `initialize(appId, token[, options])`; also `initialize({appId, token, ...})`.
   * Connects, and returns this client. */
  Client.prototype.initialize = function (appId, token, options) {
    var config = typeof appId === 'object' && appId !== null ? appId : merge(options || {}, { appId: appId, token: token });
    this.configure(config);
    this.start();
    return this;
  };

  /** Opens the signaling connection if it is not open. */
  Client.prototype.start = function () {
    if (!this.appId || !this.token) throw new Error('wilddogVideo: not initialized; call initialize({appId, token}) first');
    if (this.state === C_IDLE || this.state === C_STOPPED) this._connect();
    return this;
  };

  Client.prototype._url = function () {
    var url = this._serverUrl || this.options.server || defaultServer();
    if (!url) throw new Error('wilddogVideo: no server address: pass initialize({server: "wss://host/ws", ...})');
    return url;
  };

  Client.prototype._connect = function () {
    var self = this;
    if (this._reconnectTimer) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    this._dropSocket();
    this.state = this._everReady ? C_RECONNECTING : C_CONNECTING;
    var url = this._url();
    var ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      warn('cannot open', url, e.message);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onopen = function () {
      if (self._ws !== ws) return;
      log(self.options.debug, 'socket open', url);
      ws.send(JSON.stringify({
        type: 'connect',
        msg: {
          token: self.token,
          appId: self.appId,
          clientInfo: { sdk: 'wilddog-gst-web', sdkVersion: VERSION, browser: typeof navigator !== 'undefined' ? navigator.userAgent : '' }
        }
      }));
      self._startHeartbeat();
    };
    ws.onmessage = function (ev) {
      if (self._ws !== ws) return;
      self._onText(ev.data);
    };
    ws.onclose = function (ev) {
      if (self._ws !== ws) return;
      self._ws = null;
      self._stopHeartbeat();
      log(self.options.debug, 'socket closed', ev && ev.code);
      if (self.state === C_STOPPED) return;
      self.state = C_RECONNECTING;
      self._emit('disconnected');
      self._scheduleReconnect();
    };
    ws.onerror = function () { /* `close` follows */ };
  };

  Client.prototype._dropSocket = function () {
    var ws = this._ws;
    this._ws = null;
    this._stopHeartbeat();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(); } catch (e) { /* closed */ }
    }
  };

  Client.prototype._scheduleReconnect = function () {
    var self = this;
    var r = this.options.reconnect;
    var base = this._reconnectDelay;
    // Jitter: between half and all of the current step, so that clients dropped together do
    // not come back together.
    var delay = base * (0.5 + Math.random() * 0.5);
    this._reconnectDelay = Math.min(r.max, base * r.factor);
    log(this.options.debug, 'reconnecting in', Math.round(delay), 'ms');
    this._reconnectTimer = setTimeout(function () {
      self._reconnectTimer = null;
      if (self.state !== C_STOPPED) self._connect();
    }, delay);
  };

  Client.prototype._startHeartbeat = function () {
    var self = this;
    this._stopHeartbeat();
    if (!(this.options.heartbeatInterval > 0)) return;
    this._heartbeatTimer = setInterval(function () {
      var ws = self._ws;
      if (ws && ws.readyState === 1) ws.send(JSON.stringify(self._heartbeatCounter++));
    }, this.options.heartbeatInterval);
  };

  Client.prototype._stopHeartbeat = function () {
    if (this._heartbeatTimer) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
    this._heartbeatCounter = 0;
  };

  /** Sends a frame (or a function making one at send time), queueing it until `connack`.
   * A frame over the server's frame limit is not sent: the client gets, at once, the error
   * the server gives such a frame (`too_large`), and the socket stays up. */
  Client.prototype._send = function (frame) {
    var ws = this._ws;
    if (this.state === C_READY && ws && ws.readyState === 1) {
      var f = typeof frame === 'function' ? frame() : frame;
      var text = JSON.stringify(f);
      // Up to 3 UTF-8 bytes per UTF-16 unit: most frames need no count.
      var size = text.length * 3 > this._maxFrameBytes ? utf8Length(text) : text.length;
      if (size > this._maxFrameBytes) {
        this._refuseLocally(f, size);
        return;
      }
      ws.send(text);
      return;
    }
    this._queue.push(frame);
    if (this._queue.length > MAX_QUEUED_FRAMES) this._queue.shift();
  };

  Client.prototype._flush = function () {
    var q = this._queue;
    this._queue = [];
    for (var i = 0; i < q.length; i++) this._send(q[i]);
  };

  /** A frame over the server's limit, not sent: handled as the server's refusal of it (a
   * `call` fails with 41004), after the code that sent it has run, as an answer would. */
  Client.prototype._refuseLocally = function (f, size) {
    var self = this;
    var refusal = {
      type: 'error',
      cid: f && typeof f.cid === 'string' ? f.cid : undefined,
      msg: {
        code: 'too_large',
        reason: 'frame of ' + size + ' bytes is over the limit of ' + this._maxFrameBytes + ' bytes (not sent)',
        ref: f && typeof f.type === 'string' ? f.type : undefined
      }
    };
    setTimeout(function () { self._onServerFrame(refusal); }, 0);
  };

  Client.prototype._onText = function (text) {
    var frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      warn('ignored a frame that is not JSON');
      return;
    }
    this._onServerFrame(frame);
  };

  Client.prototype._onServerFrame = function (frame) {
    if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') return;
    log(this.options.debug, '<-', frame.type, frame.cid || '');
    var msg = frame.msg && typeof frame.msg === 'object' ? frame.msg : {};
    switch (frame.type) {
      case 'connack':
        this._onConnack(frame, msg);
        return;
      case 'call':
        this._onIncomingCall(frame, msg);
        return;
      case 'turn':
        // Our server's fresh TURN credential (an extension), before the last one expires.
        if (typeof msg.username === 'string' && typeof msg.credential === 'string') {
          this._freshTurnCredential({ username: msg.username, credential: msg.credential });
        }
        return;
      case 'error':
        warn('server refused a frame:', msg.code, msg.reason, msg.ref ? '(' + msg.ref + ')' : '');
        this._emit('server_error', { cid: frame.cid, code: msg.code, reason: msg.reason, ref: msg.ref });
        var cur = this._conversation;
        if (cur && cur.isCaller && cur.status === S_CALLING && frame.cid === cur.conversationId && msg.ref === 'call' &&
            (msg.code === 'too_large' || msg.code === 'cid_in_use' || msg.code === 'not_party')) {
          // The server dropped our `call` (its data over the frame limit, say): nobody is
          // rung, so say so now rather than TIMEOUT when the call timer runs out.
          cur._fail(makeError('CONVERSATION_CONNECT_FAILED', 'the server refused the call: ' + msg.reason), false);
          return;
        }
        if (cur && (msg.code === 'unknown_conversation' || msg.code === 'not_party') && frame.cid === cur.conversationId && cur.status !== S_CLOSED) {
          cur._onRefused(msg.code);
        }
        return;
      case 'accept':
      case 'reject':
      case 'busy':
      case 'offer':
      case 'answer':
      case 'candidate':
      case 'bye':
      case 'restartice':
      case 'unreachable': {
        var conv = this._conversation;
        if (!conv || conv.conversationId !== frame.cid || conv.remoteUid !== frame.from) return;
        conv._onFrame(frame.type, msg);
        return;
      }
      default:
      // deviceack, startack, endack and types from newer servers: nothing to do.
    }
  };

  Client.prototype._onConnack = function (frame, msg) {
    if (msg.code === 0 || msg.code === undefined) {
      if (typeof frame.url === 'string' && frame.url) {
        // Redirect to another node.
        this._serverUrl = frame.url;
        this._connect();
        return;
      }
      var reconnected = this._everReady;
      this._iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
      // Our server says how large a frame it takes (an extension); frames over it are
      // refused here, before they are sent.
      this._maxFrameBytes = typeof msg.maxFrameBytes === 'number' && msg.maxFrameBytes > 0
        ? msg.maxFrameBytes : DEFAULT_FRAME_LIMIT;
      // Minted now: the live call's media (its restart below) takes them too.
      var conv = this._conversation;
      if (reconnected && conv) {
        this._iceServers.forEach(function (s) {
          if (s && restUser(s.username) !== null && typeof s.credential === 'string') {
            conv._freshTurnCredential({ username: s.username, credential: s.credential });
          }
        });
      }
      this.state = C_READY;
      this._everReady = true;
      this._reconnectDelay = this.options.reconnect.initial;
      this._flush();
      this._emit('connected');
      if (reconnected && this._conversation) this._conversation._onReconnected();
      return;
    }
    // A token the server refuses will not get better by retrying: stop until setToken().
    this.state = C_STOPPED;
    this._dropSocket();
    // Code 1 with `appIdInvalid` (our server's extension): the app id, not the token, is wrong.
    var err = msg.code === 2 ? makeError('TOKEN_EXPIRED')
      : msg.code === 1 && msg.appIdInvalid ? makeError('APPID_INVALID')
      : makeError('TOKEN_INVALID', msg.code === 1 ? undefined : 'connack code ' + msg.code);
    this._emit('token_error', err);
  };

  /** A fresh TURN credential for our uid (`turn`): the connack's entries minted for us take
   * it (a later call sends them), and so does the live conversation. */
  Client.prototype._freshTurnCredential = function (cred) {
    this._iceServers = withFreshTurnCredential(this._iceServers, cred);
    if (this._conversation) this._conversation._freshTurnCredential(cred);
  };

  Client.prototype._onIncomingCall = function (frame, msg) {
    if (typeof frame.cid !== 'string' || !frame.cid || typeof frame.from !== 'string' || !frame.from) return;
    var cur = this._conversation;
    if (cur && cur.conversationId === frame.cid) return; // a repeat
    if (cur && cur.status !== S_CLOSED) {
      this._send({ type: 'busy', cid: frame.cid, to: frame.from, msg: {} });
      return;
    }
    var conv = new Conversation(this, {
      cid: frame.cid,
      remoteUid: frame.from,
      incoming: true,
      data: msg.data,
      iceServers: iceServersForCall(msg, this._iceServers)
    });
    this._conversation = conv;
    conv._startRinging();
    this._emit('called', conv);
  };

  Client.prototype._conversationEnded = function (conv) {
    if (this._conversation === conv) this._conversation = null;
  };

  /** Calls `remoteUid`. `data`: a string for the callee, or `{data, iceTransportPolicy}` (2.2+).
   * Hangs up the current conversation first. */
  Client.prototype.call = function (remoteUid, localStream, data) {
    if (typeof remoteUid !== 'string' || !remoteUid) throw new TypeError('call(remoteUid, localStream, data): remoteUid must be a non-empty string');
    var ls = asLocalStream(localStream);
    if (!ls) throw new TypeError('call(remoteUid, localStream, data): localStream must be a LocalStream from createLocalStream()');
    var userData = data;
    var policy;
    if (data !== undefined && data !== null && typeof data === 'object') {
      if ('data' in data || 'iceTransportPolicy' in data) {
        userData = data.data;
        policy = data.iceTransportPolicy;
      }
    } else if (data !== undefined && data !== null && typeof data !== 'string') {
      throw new TypeError('call(remoteUid, localStream, data): data must be a string or an object');
    }
    this.start();
    var cur = this._conversation;
    if (cur && cur.status !== S_CLOSED) cur._closeByNewCall();
    var conv = new Conversation(this, { cid: newId(), remoteUid: remoteUid, incoming: false, data: userData, localStream: ls, iceTransportPolicy: policy });
    this._conversation = conv;
    conv._startCalling(ls, userData);
    return conv;
  };

  /** Replaces the token and reconnects with it. */
  Client.prototype.setToken = function (token) {
    if (typeof token !== 'string' || !token) throw new TypeError('setToken(token): token must be a non-empty string');
    this.token = token;
    if (!this.appId) return this;
    this._reconnectDelay = this.options.reconnect.initial;
    this._connect();
    return this;
  };

  /** Creates a LocalStream (same as wilddogVideo.createLocalStream). */
  Client.prototype.createLocalStream = function (options) {
    return createLocalStream(options);
  };

  /** The current conversation, if any. */
  Client.prototype.getConversation = function () {
    return this._conversation;
  };

  /** Hangs up, closes the socket and stops reconnecting. `start()` or `setToken()` reopens. */
  Client.prototype.disconnect = function () {
    if (this._conversation) this._conversation.close();
    // The bye must leave before the socket closes.
    var ws = this._ws;
    var q = this._queue;
    this._queue = [];
    if (ws && ws.readyState === 1 && this.state === C_READY) {
      q.forEach(function (f) { ws.send(JSON.stringify(typeof f === 'function' ? f() : f)); });
    }
    this.state = C_STOPPED;
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._dropSocket();
    this._everReady = false;
    return this;
  };

  // ---------------------------------------------------------------------------------------
  // The global object
  // ---------------------------------------------------------------------------------------

  var defaultClient = null;
  function getClient() {
    if (!defaultClient) defaultClient = new Client();
    return defaultClient;
  }

  var wilddogVideo = {
    __wilddogGst: true,
    /** SDK version. */
    VERSION: VERSION,
    version: VERSION,
    /** 2.0 shape: `wilddogVideo.getInstance().initialize(appId, token)`. */
    getInstance: function () { return getClient(); },
    /** 2.2+ shape: `wilddogVideo.initialize({appId, token, server?, timeouts?})`; then
     * `wilddogVideo.call()` gives the (connected) client. */
    initialize: function (config) {
      if (arguments.length >= 2 && typeof config === 'string') {
        getClient().configure(merge(arguments[2] || {}, { appId: config, token: arguments[1] }));
      } else {
        getClient().configure(config);
      }
      return wilddogVideo;
    },
    /** `call()` → the client (connecting it); `call(uid, stream, data)` → a Conversation. */
    call: function () {
      var client = getClient();
      if (arguments.length === 0) return client.start();
      return client.call.apply(client, arguments);
    },
    setToken: function (token) { return getClient().setToken(token); },
    createLocalStream: createLocalStream,
    /** Extension: an independent client (several users on one page, tests). */
    createClient: function (config) { return new Client(config); },
    Client: Client,
    Conversation: Conversation,
    LocalStream: LocalStream,
    RemoteStream: RemoteStream,
    CallStatus: CallStatus,
    DIMENSIONS: DIMENSIONS,
    ERROR_CODES: Object.keys(ERRORS).reduce(function (acc, k) { acc[k] = ERRORS[k].code; return acc; }, {}),
    /** Internal: lets wilddog-video.mjs pass its import.meta.url for the default server. */
    _setScriptUrl: function (url) { if (typeof url === 'string' && !scriptUrl) scriptUrl = url; },
    /** Internal, for tests: SDP bandwidth munging. */
    _setVideoBandwidth: setVideoBandwidth,
    _setVideoBitrateCap: setVideoBitrateCap
  };

  return wilddogVideo;
});
