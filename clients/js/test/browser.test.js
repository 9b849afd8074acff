// The SDK in a real browser (headless chromium), loaded as plain ES modules through an import
// map: join, heartbeats, a dropped network with resume, leave, and a refused token. Skipped
// (with the reason) where chromium is not installed; `make test` installs it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { SpidiClient } from 'spidi-client';

import { Browser, chromiumPath, servePage } from '../support/browser.js';
import { SpidiNode, mintToken, waitFor } from '../support/node.js';
import { CuttableProxy } from '../support/tools.js';

const chromium = chromiumPath();
const skip = chromium ? false : 'chromium is not installed (apt-get install -y chromium)';

describe('in a browser', { skip }, () => {
  const node = new SpidiNode('browser', { SPIDI_HEARTBEAT_INTERVAL_MS: '200' });
  let page;
  let browser;
  let proxy;
  let monitor;

  before(async () => {
    await node.start();
    proxy = await new CuttableProxy(node.port).start();
    page = await servePage();
    browser = await Browser.launch(chromium, page.url);
    await waitFor(() => browser.evaluate('!!window.sdk'), 'the SDK loaded in the page', 15_000, 100);
  });

  after(async () => {
    await monitor?.close();
    await browser?.close();
    await page?.close();
    await proxy?.close();
    await node.cleanup();
  });

  it('joins, heartbeats, resumes after a dropped connection, leaves; a refused token stops it', async () => {
    monitor = new SpidiClient({ url: node.url, token: mintToken({ sub: 'ops', roles: ['spidi:monitor'] }) });
    const left = [];
    const watch = monitor.watchRoom('web', { onRoster: (_r, msg) => left.push(...(msg.left ?? [])) });

    const config = { url: proxy.url(), token: mintToken({ sub: 'web-user' }), room: 'web', clientId: 'tab-1', appVersion: '1.0.0' };
    const welcome = await browser.evaluate(`(async () => {
      const { SpidiClient } = window.sdk;
      window.events = [];
      const c = (window.member = new SpidiClient({ ...${JSON.stringify(config)}, reconnectBaseMs: 50, reconnectCapMs: 400 }));
      for (const name of ['welcome', 'resumed', 'reconnecting', 'error', 'ended']) {
        c.on(name, (p) => window.events.push({ name, code: p.code ?? null, sessionId: p.sessionId ?? null, resumed: p.resumed ?? null }));
      }
      return await c.join();
    })()`);
    assert.equal(welcome.type, 'WELCOME');
    assert.equal(welcome.resumed, false);
    const entry = await waitFor(() => watch.roster.get(welcome.sessionId), 'the browser member in the roster');
    assert.equal(entry.clientId, 'tab-1');
    await waitFor(() => browser.evaluate('window.member.latencyMs > 0'), 'a latency measured in the browser');
    const measured = Date.now();
    await waitFor(() => watch.roster.get(welcome.sessionId)?.lastHeartbeatAt > measured, 'a later heartbeat');

    proxy.cut();
    const resumed = await waitFor(
      () => browser.evaluate(`window.events.find((e) => e.name === 'resumed') ?? null`),
      'the browser client resumed',
    );
    assert.equal(resumed.sessionId, welcome.sessionId);
    const events = await browser.evaluate('window.events');
    const retry = events.find((e) => e.name === 'reconnecting');
    assert.equal(retry.code, 1006);
    assert.deepEqual(left, []); // the monitor saw no leave

    await browser.evaluate('window.member.leave()');
    await waitFor(() => left.find((l) => l.sessionId === welcome.sessionId && l.reason === 'leave'), 'the leave');

    const refused = await browser.evaluate(`(async () => {
      const c = new window.sdk.SpidiClient({ url: ${JSON.stringify(node.url)}, token: 'not-a-jwt', room: 'web' });
      try { await c.join(); return null; } catch (e) { return { code: e.code, fatal: e.fatal, message: e.message }; }
    })()`);
    assert.equal(refused.code, 'UNAUTHORIZED');
    assert.equal(refused.fatal, true);
    assert.match(refused.message, /invalid token/);
  });
});
