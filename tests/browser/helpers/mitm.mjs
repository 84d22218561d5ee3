// A malicious server in the middle: Playwright's routeWebSocket sits between one page and the real server,
// records every frame both ways, and lets a test rewrite, drop or inject frames the page receives. The real
// server never knows; the page cannot tell the difference, which is the point.
import { enterChat, generateKey, openUser } from './browser.mjs';

/**
 * Routes the page's WebSocket to `wsUrl` through a recorder. Call before the chat screen opens its socket.
 * `mitm.rewrite(frame)` (optional) sees each parsed server frame for the page and returns the frame to
 * deliver (maybe changed), or null to drop it. `mitm.rewriteOnce(matches, change)` does that to the first
 * matching frame only and returns a promise of the frame as delivered, so a test can assert that its rewrite
 * fired (and it cannot linger onto later frames). `mitm.strip(frame)` (optional) sees each parsed page frame
 * before it is forwarded: returning true keeps it from the server, and the page gets the ACK an honest server
 * would send for it (the lie that hides the drop); every frame kept back is in `mitm.stripped`. Reconnections
 * are routed too; `inject` and `closePage` use the latest socket.
 */
export async function interceptSocket(page, wsUrl) {
  const mitm = {
    toPage: [], // parsed server → page frames, as the server sent them (before any rewrite)
    fromPage: [], // parsed page → server frames
    rewrite: null,
    strip: null,
    stripped: [], // page frames kept from the server by `strip`
    route: null,
    onceRewrites: [],
    rewriteOnce(matches, change) {
      return new Promise((resolve) => mitm.onceRewrites.push({ matches, change, resolve }));
    },
    /** Closes the page's socket as a network drop would (the server side follows). */
    closePage() {
      mitm.route.close({ code: 3000, reason: 'mitm' }); // not 4001 (taken over): the page reconnects
    },
    inject(frame) {
      if (!mitm.route) throw new Error('no routed socket yet');
      mitm.route.send(JSON.stringify(frame));
    },
    /** Server frames to the page of one type, optionally from one ID. */
    received(type, from) {
      return mitm.toPage.filter((f) => f.type === type && (from === undefined || f.from === from));
    },
  };
  await page.routeWebSocket(wsUrl, (ws) => {
    const server = ws.connectToServer();
    mitm.route = ws;
    ws.onMessage((message) => {
      const frame = JSON.parse(String(message));
      mitm.fromPage.push(frame);
      if (mitm.strip && mitm.strip(frame)) {
        mitm.stripped.push(frame);
        if (frame.ref !== undefined) ws.send(JSON.stringify({ type: 'ACK', ref: frame.ref }));
        return;
      }
      server.send(message);
    });
    server.onMessage((message) => {
      const frame = JSON.parse(String(message));
      mitm.toPage.push(frame);
      let delivered = mitm.rewrite ? mitm.rewrite(structuredClone(frame)) : frame;
      const once = delivered && mitm.onceRewrites.find((r) => r.matches(delivered));
      if (once) {
        mitm.onceRewrites.splice(mitm.onceRewrites.indexOf(once), 1);
        delivered = once.change(structuredClone(delivered));
        once.resolve(delivered);
      }
      if (delivered) ws.send(JSON.stringify(delivered));
    });
  });
  return mitm;
}

/**
 * A new user in the chat whose socket runs through `interceptSocket` from its first frame, as `user.mitm`;
 * `remember`: the key is remembered on the device (so the page can be reloaded and unlocked).
 */
export async function interceptedChatUser(browser, server, { name, remember = false }) {
  const user = await openUser(browser, server, { name });
  user.mitm = await interceptSocket(user.page, server.wsUrl);
  await generateKey(user, { remember });
  await enterChat(user);
  return user;
}
