// Puts a page's signaling WebSocket through Playwright's WebSocket routing, so that a test can
// read every frame the SDK sends and receives and drop the connection on demand (to test
// reconnect). The frames still go to the real server.
export async function proxySignaling(page, wsUrl) {
  const frames = [];
  const live = new Set();
  await page.routeWebSocket(wsUrl, (ws) => {
    const server = ws.connectToServer();
    const conn = { ws, server };
    live.add(conn);
    ws.onMessage((m) => {
      frames.push({ dir: 'out', text: String(m), t: Date.now() });
      server.send(m);
    });
    server.onMessage((m) => {
      frames.push({ dir: 'in', text: String(m), t: Date.now() });
      ws.send(m);
    });
    ws.onClose(() => { live.delete(conn); server.close().catch(() => {}); });
    server.onClose(() => { live.delete(conn); ws.close().catch(() => {}); });
  });
  return {
    frames,
    /** Parsed frames in one direction ('out' = SDK → server), bare numbers as numbers. */
    parsed(dir) {
      return frames.filter((f) => f.dir === dir).map((f) => JSON.parse(f.text));
    },
    /** Closes every live connection (both sides), as a network drop would. */
    async drop() {
      const conns = [...live];
      live.clear();
      for (const { ws, server } of conns) {
        await ws.close({ code: 4000, reason: 'test drop' }).catch(() => {});
        await server.close().catch(() => {});
      }
      return conns.length;
    },
  };
}
