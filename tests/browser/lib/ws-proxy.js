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
    // A close on one side is forwarded to the other, except during drop(), which closes both
    // sides itself (a forwarded close would carry no code: "leaving on purpose").
    ws.onClose(() => { live.delete(conn); if (!conn.dropped) server.close().catch(() => {}); });
    server.onClose(() => { live.delete(conn); if (!conn.dropped) ws.close().catch(() => {}); });
  });
  return {
    frames,
    /** Parsed frames in one direction ('out' = SDK → server), bare numbers as numbers. */
    parsed(dir) {
      return frames.filter((f) => f.dir === dir).map((f) => JSON.parse(f.text));
    },
    /**
     * Closes every live connection (both sides), as a network drop would. The server side is
     * closed with an error code (4000): a close without a code or with 1000/1001 tells our
     * server the client is leaving on purpose (its calls end at once), any other code counts
     * as a lost connection (its calls wait for it to reconnect), like a TCP reset.
     */
    async drop() {
      const conns = [...live];
      live.clear();
      for (const conn of conns) {
        conn.dropped = true;
        await conn.server.close({ code: 4000, reason: 'test drop' }).catch(() => {});
        await conn.ws.close({ code: 4000, reason: 'test drop' }).catch(() => {});
      }
      return conns.length;
    },
  };
}
