// A tiny HTTP server on 127.0.0.1 for the tests' own pages (the SDK test page, the original
// SDK's bundle). Pages served from loopback are secure contexts and in the same (loopback)
// address space as the signaling server, which Chromium's Local Network Access checks require:
// a page that Playwright fulfills itself counts as public and may not open ws://127.0.0.1.
import { createServer } from 'node:http';

export async function startStatic() {
  const files = new Map();
  const srv = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const f = files.get(path);
    if (!f) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(`not found: ${path}`);
      return;
    }
    res.writeHead(200, { 'content-type': f.type, 'cache-control': 'no-store' });
    res.end(f.body);
  });
  await new Promise((ok) => srv.listen(0, '127.0.0.1', ok));
  const base = `http://127.0.0.1:${srv.address().port}`;
  return {
    base,
    /** Serves `body` at `path`. */
    put(path, body, type = 'text/html; charset=utf-8') {
      files.set(path, { body, type });
      return `${base}${path}`;
    },
    close: () => new Promise((ok) => srv.close(ok)),
  };
}
