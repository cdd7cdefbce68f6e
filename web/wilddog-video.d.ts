// Type declarations of the wilddog-gst browser SDK (web/wilddog-video.js), served at
// /sdk/wilddog-video.d.ts. The script sets the global `wilddogVideo`; the ES module entry
// (/sdk/wilddog-video.mjs) exports the same object as default plus named members.

declare namespace wilddogVideo {
  /** Capture size presets. */
  type Dimension = '120p' | '240p' | '360p' | '480p' | '720p' | '1080p';

  /** Caller-side answer to a call. */
  type CallResponse = 'ACCEPTED' | 'REJECTED' | 'BUSY' | 'TIMEOUT';

  /** Conversation.status. */
  type ConversationStatus = 'calling' | 'ringing' | 'accepted' | 'connected' | 'closed';

  /** Client.state. */
  type ClientState = 'idle' | 'connecting' | 'ready' | 'reconnecting' | 'stopped';

  /**
   * Error codes of the original SDK:
   * 41001 TOKEN_EXPIRED, 41002 TOKEN_INVALID, 41003 GET_CONFIG_ERROR,
   * 41004 CONVERSATION_CONNECT_FAILED, 41005 DEVICE_NOT_AVAILABLE, 41006 OPERATION_TIMEOUT,
   * 41007 CONVERSATION_TIMEOUT, 41008 APPID_INVALID.
   */
  type ErrorCode = 41001 | 41002 | 41003 | 41004 | 41005 | 41006 | 41007 | 41008;

  /** An Error with the original SDK's code. */
  interface WilddogError extends Error {
    code: ErrorCode;
    /** The code's name, e.g. `"TOKEN_EXPIRED"`. */
    reason: string;
  }

  interface LocalStreamOptions {
    /** Capture the microphone. Default true. */
    captureAudio?: boolean;
    /** Capture the camera. Default true. Both false is an error. */
    captureVideo?: boolean;
    /** Capture size. Default `'480p'` (640x480). */
    dimension?: Dimension;
    /** Frame rate cap, 1..30. Default 15. */
    maxFPS?: number;
    /** Video bitrate floor in kbps (despite the name), clamped to 50..2048. */
    minBitrateBps?: number;
    /** Video bitrate cap in kbps (despite the name), clamped to 50..2048; sent as `b=AS`. */
    maxBitrateBps?: number;
  }

  /** Timers in milliseconds (0 disables one). Defaults: 30000 each. */
  interface Timeouts {
    /** Caller: no answer → `response` TIMEOUT. */
    call?: number;
    /** Callee: not accepted/rejected → `error` 41007. */
    answer?: number;
    /** Accepted but media not connected → `error` 41004. */
    connect?: number;
  }

  interface ClientOptions {
    /** Signaling WebSocket URL. Default: `ws(s)://<host>/ws` of the server the SDK was loaded
     * from (…/sdk/wilddog-video.js), else of the page. */
    server?: string;
    timeouts?: Timeouts;
    /** Heartbeat period in ms. Default 30000. */
    heartbeatInterval?: number;
    /** `local_stats`/`remote_stats` period in ms. Default 2000. */
    statsInterval?: number;
    /** Reconnect backoff: first delay, growth factor, cap (ms). Default 1000, 1.3, 30000. */
    reconnect?: { initial?: number; factor?: number; max?: number };
    /** Log signaling to the console. */
    debug?: boolean;
  }

  interface InitializeOptions extends ClientOptions {
    appId: string;
    token: string;
  }

  /** 2.2+ call options: `call(uid, stream, {data, iceTransportPolicy})`. */
  interface CallOptions {
    data?: string;
    iceTransportPolicy?: 'all' | 'relay';
  }

  interface LocalStats {
    bytesSent: number;
    /** kbps over the last period. */
    bitSentRate: number;
    fps: number;
    width: number;
    height: number;
    /** `host`, `srflx`, `prflx` or `relay`. */
    candidateType: string;
    framesEncoded: number;
    packetsSent: number;
    /** The video encoder's target, kbps (it follows the browser's congestion control). */
    targetBitrate: number;
    /** The browser's estimate of the path (availableOutgoingBitrate), kbps. */
    estimatedBitrate: number;
    /** Packets the peer reports lost. */
    packetsLost: number;
    nackReceived: number;
    pliReceived: number;
    firReceived: number;
    /** Packets resent (RTX). */
    retransmitted: number;
  }

  interface RemoteStats {
    /** The remote uid. */
    id: string;
    bytesReceived: number;
    /** kbps over the last period. */
    bitReceivedRate: number;
    fps: number;
    /** Round-trip time in ms. */
    delay: number;
    width: number;
    height: number;
    candidateType: string;
    framesDecoded: number;
    packetsLost: number;
    /** Video jitter in ms. */
    jitter: number;
    packetsReceived: number;
    /** Packets a retransmission repaired. */
    packetsRepaired: number;
    nackSent: number;
    pliSent: number;
    firSent: number;
    /** The video jitterbuffer's delay over the period, ms. */
    jitterBufferLatency: number;
  }

  /** The `quality` event: the link gives the video less than the dimension needs, or enough again. */
  interface Quality {
    quality: 'low' | 'good';
    /** kbps: the browser's estimate of the path, the video encoder's target, what the dimension needs (minBitrateBps). */
    estimatedBitrate: number;
    targetBitrate: number;
    neededBitrate: number;
    width: number;
    height: number;
    fps: number;
  }

  class Stream {
    /** The underlying MediaStream. */
    readonly stream: MediaStream;
    /** Shows the stream in an element (a LocalStream plays muted). */
    attach(element: HTMLMediaElement): this;
    /** Removes the stream from `element`, or from every element it is attached to. */
    detach(element?: HTMLMediaElement): this;
    enableAudio(enabled: boolean): this;
    enableVideo(enabled: boolean): this;
    /** Stops the tracks and detaches. */
    close(): this;
  }

  class LocalStream extends Stream {
    readonly type: 'LocalStream';
    readonly captureAudio: boolean;
    readonly captureVideo: boolean;
    readonly dimension: Dimension;
    readonly maxFPS: number;
    /** kbps */
    readonly minBitrateBps: number;
    /** kbps */
    readonly maxBitrateBps: number;
    /** Next camera; resolves false when there is only one. */
    switchCamera(): Promise<boolean>;
  }

  class RemoteStream extends Stream {
    readonly type: 'RemoteStream';
  }

  interface ConversationEvents {
    /** Caller: the callee's answer (TIMEOUT also when the callee is offline). */
    response: (status: CallResponse) => void;
    /** The other party's media. Sticky: a late listener still gets it. */
    stream_received: (stream: RemoteStream) => void;
    /** The other side closed (or cancelled before an answer). Not raised on the side that closes. */
    closed: () => void;
    error: (error: WilddogError) => void;
    local_stats: (stats: LocalStats) => void;
    remote_stats: (stats: RemoteStats) => void;
    /** Extension: the video encoder's target fell below what the dimension needs ('low'), or is back ('good'). */
    quality: (quality: Quality) => void;
  }

  class Conversation {
    readonly conversationId: string;
    /** Same as conversationId. */
    readonly cid: string;
    readonly remoteUid: string;
    /** The caller's user data. */
    readonly data: unknown;
    readonly isCaller: boolean;
    readonly status: ConversationStatus;
    readonly localStream: LocalStream | null;
    readonly remoteStream: RemoteStream | null;
    /** Callee: answer yes. */
    accept(localStream: LocalStream): Promise<Conversation>;
    /** Callee: answer no; the caller gets REJECTED. */
    reject(): Promise<Conversation>;
    /** Cancel a ringing call or hang up; the other side gets `closed`. */
    close(): void;
    on<E extends keyof ConversationEvents>(event: E, listener: ConversationEvents[E]): this;
    once<E extends keyof ConversationEvents>(event: E, listener: ConversationEvents[E]): this;
    off<E extends keyof ConversationEvents>(event?: E, listener?: ConversationEvents[E]): this;
  }

  interface ClientEvents {
    /** An incoming call (not raised while a conversation is live: that caller gets BUSY). */
    called: (conversation: Conversation) => void;
    /** 41001 (expired), 41002 (invalid) or 41008 (an app id the server does not have); the client stops until setToken(). */
    token_error: (error: WilddogError) => void;
    /** Extension: a good connack (also after each reconnect). */
    connected: () => void;
    /** Extension: the socket was lost; the client reconnects with backoff. */
    disconnected: () => void;
    /** Extension: the server refused a frame (its `error` frame). */
    server_error: (error: { cid?: string; code: string; reason: string; ref?: string }) => void;
  }

  class Client {
    readonly appId: string | null;
    readonly token: string | null;
    readonly state: ClientState;
    readonly options: Required<ClientOptions>;
    /** 2.0 shape. Connects; returns this client. */
    initialize(appId: string, token: string, options?: ClientOptions): this;
    initialize(options: InitializeOptions): this;
    /** Sets appId/token/options without connecting. */
    configure(options: InitializeOptions): this;
    /** Connects if not connected. */
    start(): this;
    createLocalStream(options?: LocalStreamOptions): Promise<LocalStream>;
    /** Calls `remoteUid`, hanging up the current conversation first. */
    call(remoteUid: string, localStream: LocalStream, data?: string | CallOptions): Conversation;
    /** Replaces the token and reconnects. */
    setToken(token: string): this;
    getConversation(): Conversation | null;
    /** Hangs up, closes the socket, stops reconnecting. */
    disconnect(): this;
    on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): this;
    once<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): this;
    off<E extends keyof ClientEvents>(event?: E, listener?: ClientEvents[E]): this;
  }

  const VERSION: string;
  const version: string;
  /** 2.0 shape: `wilddogVideo.getInstance().initialize(appId, token)`. */
  function getInstance(): Client;
  /** 2.2+ shape: configure, then `wilddogVideo.call()` for the client. */
  function initialize(options: InitializeOptions): typeof wilddogVideo;
  /** No arguments: the client (connecting it). */
  function call(): Client;
  /** With arguments: the default client's call(). */
  function call(remoteUid: string, localStream: LocalStream, data?: string | CallOptions): Conversation;
  function setToken(token: string): Client;
  function createLocalStream(options?: LocalStreamOptions): Promise<LocalStream>;
  /** Extension: an independent client (several users in one page). */
  function createClient(options?: InitializeOptions): Client;
  const CallStatus: { ACCEPTED: 'ACCEPTED'; REJECTED: 'REJECTED'; BUSY: 'BUSY'; TIMEOUT: 'TIMEOUT' };
  const DIMENSIONS: Record<Dimension, { width: number; height: number }>;
  const ERROR_CODES: Record<string, ErrorCode>;
}

// UMD: a global `wilddogVideo` in scripts, and the module's export for `import`/`require`.
export = wilddogVideo;
export as namespace wilddogVideo;
