// A camera for browser pages that compresses like a real one: a canvas of the requested size
// and rate showing a moving texture (a pre-drawn noise-and-rings image panned every frame, as
// the pipelines' zone plate), stamped with the capture instant in epoch ms modulo 65536 in
// call-bench's block code, so that a pipeline and a page read each other's stamps on one
// clock. The shaped-network benchmark (benches/chromium/network.mjs) and the browser tests use
// it: Chrome's fake camera (a flat picture with a small moving shape) hides what a detailed picture costs.
//
//   await page.evaluate(installCamera, [640, 480]);  // before the page's getUserMedia
//
// Page side, also: `NET.begin()` records every frame the remote <video> presents and its
// stamp; `NET.sentBytes()` what the page's peer connection sent.

/** Page function: replaces getUserMedia's video by the textured canvas; defines `NET`. */
export function installCamera([WIDTH, HEIGHT]) {
  const BLOCK = 24;
  const BITS = 16;
  const clock = () => performance.timeOrigin + performance.now();
  const NET = { start: null, frames: [], g2g: [], unreadable: 0 };
  window.NET = NET;

  function writeCode(ctx, value) {
    for (let row = 0; row < 2; row++) {
      const v = row === 0 ? value : ~value & 0xffff;
      for (let bit = 0; bit < BITS; bit++) {
        ctx.fillStyle = (v >> (BITS - 1 - bit)) & 1 ? '#fff' : '#000';
        ctx.fillRect(bit * BLOCK, row * BLOCK, BLOCK, BLOCK);
      }
    }
  }
  function readCode(at, block) {
    const values = [0, 0];
    const lo = Math.floor(block / 3);
    const hi = Math.ceil((2 * block) / 3);
    for (let row = 0; row < 2; row++) {
      for (let bit = 0; bit < BITS; bit++) {
        let sum = 0;
        let n = 0;
        for (let dy = lo; dy < hi; dy++) {
          for (let dx = lo; dx < hi; dx++) { sum += at(Math.floor(bit * block) + dx, Math.floor(row * block) + dy); n++; }
        }
        values[row] = (values[row] << 1) | (sum / Math.max(1, n) > 125 ? 1 : 0);
      }
    }
    return values[0] === (~values[1] & 0xffff) ? values[0] : -1;
  }

  // A texture twice the frame: noise and rings, drawn once, panned every frame.
  const texture = document.createElement('canvas');
  texture.width = WIDTH * 2;
  texture.height = HEIGHT * 2;
  {
    const t = texture.getContext('2d');
    const img = t.createImageData(texture.width, texture.height);
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let y = 0; y < texture.height; y++) {
      for (let x = 0; x < texture.width; x++) {
        const r = Math.hypot(x - texture.width / 2, y - texture.height / 2);
        const ring = 128 + 90 * Math.sin(r * r * 0.0008);
        const v = Math.max(0, Math.min(255, ring + (rnd() - 0.5) * 16));
        const i = (y * texture.width + x) * 4;
        img.data[i] = v;
        img.data[i + 1] = (v + x) & 255;
        img.data[i + 2] = (v + y) & 255;
        img.data[i + 3] = 255;
      }
    }
    t.putImageData(img, 0, 0);
  }

  function canvasTrack(video) {
    const pick = (c, d) => (typeof c === 'number' ? c : (c && (c.exact || c.ideal || c.max)) || d);
    const width = pick(video.width, WIDTH);
    const height = pick(video.height, HEIGHT);
    const fps = pick(video.frameRate, 15);
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d');
    const stream = canvas.captureStream(0);
    const track = stream.getVideoTracks()[0];
    // Chrome asks the track for a frame; Firefox the stream.
    const requestFrame = track.requestFrame ? () => track.requestFrame() : () => stream.requestFrame();
    let n = 0;
    const timer = setInterval(() => {
      if (track.readyState === 'ended') { clearInterval(timer); return; }
      const ox = (n * 7) % width;
      const oy = (n * 5) % height;
      ctx.drawImage(texture, ox, oy, width, height, 0, 0, width, height);
      n++;
      writeCode(ctx, Math.round(clock()) & 0xffff);
      requestFrame();
    }, 1000 / fps);
    return track;
  }
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {
    const ms = c && c.audio ? await real({ audio: c.audio, video: false }) : new MediaStream();
    if (c && c.video) ms.addTrack(canvasTrack(c.video === true ? {} : c.video));
    return ms;
  };

  /** Records every frame the remote <video> presents (and its stamp) from now. */
  NET.begin = () => {
    NET.start = clock();
    const v = document.getElementById('remote');
    const since = (t, code) => (((t - code) % 65536) + 65536) % 65536;
    const onFrame = async (_now, meta) => {
      v.requestVideoFrameCallback(onFrame);
      const received = performance.timeOrigin + meta.presentationTime;
      NET.frames.push((received - NET.start) / 1000);
      let frame;
      let code = -1;
      try {
        frame = new VideoFrame(v);
        const sx = frame.codedWidth / WIDTH;
        const block = BLOCK * sx;
        const even = (x) => 2 * Math.ceil(x / 2);
        const rect = { x: 0, y: 0, width: Math.min(frame.codedWidth, even(BITS * block)), height: Math.min(frame.codedHeight, even(2 * block)) };
        const buf = new Uint8Array(frame.allocationSize({ rect }));
        const layout = await frame.copyTo(buf, { rect });
        const { offset, stride } = layout[0];
        const step = /^(I4|NV12)/.test(frame.format || '') ? 1 : 4;
        const green = step === 1 ? 0 : 1;
        code = readCode((x, y) => buf[offset + y * stride + x * step + green], block);
      } catch {
        code = -1;
      } finally {
        if (frame) frame.close();
      }
      if (code < 0) NET.unreadable++;
      else NET.g2g.push(since(received, code));
    };
    v.requestVideoFrameCallback(onFrame);
  };
  NET.sentBytes = async () => {
    const stats = await T.pc().getStats();
    let bytes = 0;
    stats.forEach((s) => { if (s.type === 'outbound-rtp') bytes += s.bytesSent || 0; });
    return bytes;
  };
}
