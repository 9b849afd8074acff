// A real Spidi node for the SDK's tests: `spidi serve --dev` as a child process on a data
// directory of its own under <repo>/test-artifacts/js/<name>/, with its embedded Redis (history off, so
// no PostgreSQL: a boot takes about a second). Tokens are minted here with the node's HS256
// secret (SPIDI_JWT_SECRET). cleanup() kills whatever the node started, whatever the test did.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const PYTHON = process.env.SPIDI_PYTHON || path.join(REPO, '.venv/bin/python');
const ARTIFACTS = path.join(REPO, 'test-artifacts/js');
const START_TIMEOUT_MS = 30_000;
export const SECRET = randomBytes(32).toString('hex');

/** A free TCP port on loopback (the kernel's choice). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** An HS256 JWT the node accepts (claims as auth.py reads them). */
export function mintToken({ sub, roles = ['spidi:user'], tenant = 'default', ttlS = 3600 }) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const nowS = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, roles, tenant, iat: nowS, exp: nowS + ttlS })}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

/** Poll `condition` until it returns something truthy; fail naming `what` after `timeoutMs`. */
export async function waitFor(condition, what, timeoutMs = 10_000, intervalMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Processes whose command line names `dir` (the embedded redis-server outlives a SIGKILLed node). */
function processesNaming(dir) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(dir)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

export class SpidiNode {
  /**
   * @param {string} name a label for the data directory
   * @param {Record<string, string>} env extra SPIDI_* settings
   */
  constructor(name, env = {}) {
    this.name = name;
    this.env = env;
    // One folder per name: a run replaces the last run's, whose logs stay there to read.
    this.base = path.join(ARTIFACTS, name);
    this.dataDir = path.join(this.base, 'data');
    this.nodeId = `js-${name}`;
    this.proc = null;
    this.starts = 0;
    this.exited = null;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** The REST API of the node's ops port: `api('POST', '/api/v1/…', token, body)` → {status, body}. */
  async api(method, pathname, token, body = undefined) {
    const res = await fetch(`http://127.0.0.1:${this.opsPort}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  /** Start (or start again, same node id, ports and data directory) and wait for its banner. */
  async start() {
    if (!this.port) {
      this.port = await freePort();
      this.opsPort = await freePort();
      rmSync(this.base, { recursive: true, force: true });
    }
    mkdirSync(this.base, { recursive: true });
    const errPath = path.join(this.base, `serve-${this.starts++}.err`);
    const errFd = openSync(errPath, 'w');
    const argv = ['-m', 'spidi_server.cli', 'serve', '--dev', '--data-dir', this.dataDir];
    argv.push('--port', String(this.port), '--ops-port', String(this.opsPort), '--node-id', this.nodeId);
    const proc = spawn(PYTHON, argv, {
      cwd: REPO,
      detached: true, // its own process group: cleanup() kills the group
      stdio: ['ignore', 'pipe', errFd],
      env: {
        ...process.env,
        PYTHONPATH: REPO,
        SPIDI_REDIS_URL: '',
        SPIDI_POSTGRES_DSN: '',
        SPIDI_HISTORY: 'false',
        SPIDI_ALERTING: 'false',
        SPIDI_JWT_SECRET: SECRET,
        SPIDI_JWT_LEEWAY_S: '0',
        ...this.env,
      },
    });
    closeSync(errFd);
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    let out = '';
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no banner in ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
      proc.stdout.on('data', (chunk) => {
        out += chunk;
        if (/^\s+user\s+\S+$/m.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code}) before its banner:\n${out}\n${this.stderr().slice(-3000)}`));
      });
    });
    proc.stdout.resume(); // keep draining: a full pipe would block the node's prints
    return this;
  }

  /** What the node wrote to stderr, every start (its JSON log). */
  stderr() {
    if (!existsSync(this.base)) return '';
    return readdirSync(this.base)
      .filter((f) => f.endsWith('.err'))
      .sort()
      .map((f) => readFileSync(path.join(this.base, f), 'utf8'))
      .join('\n');
  }

  /** kill -9 of the node process alone (its embedded Redis lives on, as after a crash). */
  async kill9() {
    process.kill(this.proc.pid, 'SIGKILL');
    await this.exited;
  }

  /** A clean stop (SIGTERM); resolves once it exited. */
  async terminate() {
    process.kill(this.proc.pid, 'SIGTERM');
    return this.exited;
  }

  /** SIGKILL the node's process group and anything naming its data directory; remove the data. */
  async cleanup() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      try {
        process.kill(-this.proc.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await this.exited;
    }
    for (const pid of processesNaming(this.dataDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await waitFor(() => processesNaming(this.dataDir).length === 0, `${this.name}'s processes to go`, 10_000);
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
