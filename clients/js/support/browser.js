// A real browser for the SDK's browser test: Debian's chromium, headless, driven over the Chrome
// DevTools Protocol on a pipe (--remote-debugging-pipe: JSON messages ended by NUL on fds 3/4),
// and a small HTTP server giving it a page that loads the SDK as plain ES modules through an
// import map (no bundler), as the README tells web pages to.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** SPIDI_CHROMIUM, else Debian's chromium; null when there is none. */
export function chromiumPath() {
  for (const candidate of [process.env.SPIDI_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    if (candidate && existsSync(candidate)) return candidate;
  }
  return null;
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<script type="importmap">
  {"imports": {"spidi-client": "/sdk/index.js", "@stomp/stompjs": "/stompjs/index.js"}}
</script>
<script type="module">
  import * as sdk from 'spidi-client';
  window.sdk = sdk;
</script>
`;

/** An HTTP server for the page, the SDK (src/) and stompjs (its esm6 build), on loopback. */
export async function servePage() {
  const roots = {
    '/sdk/': path.join(PACKAGE, 'src'),
    '/stompjs/': path.join(PACKAGE, 'node_modules/@stomp/stompjs/esm6'),
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
      return;
    }
    for (const [prefix, dir] of Object.entries(roots)) {
      const rel = url.pathname.slice(prefix.length);
      if (url.pathname.startsWith(prefix) && /^[\w./-]+\.js$/.test(rel) && !rel.includes('..')) {
        const file = path.join(dir, rel);
        if (existsSync(file)) {
          res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(file));
          return;
        }
      }
    }
    res.writeHead(404).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((r) => server.close(r)) };
}

/** Headless chromium with one page; evaluate(expression) runs in it and returns the value. */
export class Browser {
  static async launch(executable, pageUrl) {
    const profile = mkdtempSync(path.join(os.tmpdir(), 'spidi-js-chromium-'));
    const proc = spawn(
      executable,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
        `--user-data-dir=${profile}`,
        '--remote-debugging-pipe',
        'about:blank',
      ],
      { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'], detached: true },
    );
    const browser = new Browser(proc, profile);
    const { targetId } = await browser.send('Target.createTarget', { url: pageUrl });
    const { sessionId } = await browser.send('Target.attachToTarget', { targetId, flatten: true });
    browser.sessionId = sessionId;
    return browser;
  }

  constructor(proc, profile) {
    this.proc = proc;
    this.profile = profile;
    this.exited = new Promise((resolve) => proc.on('exit', resolve));
    this.nextId = 0;
    this.pending = new Map();
    let buf = '';
    proc.stdio[4].on('data', (chunk) => {
      buf += chunk.toString('utf8');
      let end;
      while ((end = buf.indexOf('\0')) >= 0) {
        const msg = JSON.parse(buf.slice(0, end));
        buf = buf.slice(end + 1);
        const waiter = this.pending.get(msg.id);
        if (waiter) {
          this.pending.delete(msg.id);
          if (msg.error) waiter.reject(new Error(`${waiter.method}: ${msg.error.message}`));
          else waiter.resolve(msg.result);
        }
      }
    });
    proc.stdio[3].on('error', () => {}); // the browser gone: pending calls fail below
    proc.on('exit', () => {
      for (const w of this.pending.values()) w.reject(new Error('chromium exited'));
      this.pending.clear();
    });
  }

  send(method, params = {}, sessionId = undefined) {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.proc.stdio[3].write(`${JSON.stringify({ id, method, params, sessionId })}\0`);
    });
  }

  /** The value of `expression` in the page (awaited when it is a promise). */
  async evaluate(expression) {
    const { result, exceptionDetails } = await this.send(
      'Runtime.evaluate',
      { expression, awaitPromise: true, returnByValue: true },
      this.sessionId,
    );
    if (exceptionDetails) {
      throw new Error(`in the page: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`);
    }
    return result.value;
  }

  async close() {
    try {
      process.kill(-this.proc.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await this.exited;
    rmSync(this.profile, { recursive: true, force: true });
  }
}
