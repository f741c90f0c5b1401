// src/common/http.ts on real sockets: the probe and metrics listeners, and a close that never waits on a client.
import { request } from 'node:http';
import pino from 'pino';
import { Registry, Counter } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { closeServer, metricsListener, probeListener, startHttpListener, type HttpListener } from '../../src/common/http.js';

const silent = pino({ level: 'silent' });
const open: HttpListener[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((l) => l.close()));
});

async function start(listener: Parameters<typeof startHttpListener>[0], host = '127.0.0.1'): Promise<HttpListener> {
  const l = await startHttpListener(listener, host, 0);
  open.push(l);
  return l;
}

describe('probeListener', () => {
  it('answers /healthz with 200 and whether it acts, /readyz with 200 or 503, extra routes, 404 otherwise', async () => {
    let active = false;
    let ready = false;
    const l = await start(
      probeListener({
        active: () => active,
        ready: () => ready,
        notReadyText: 'caches not synced',
        routes: { '/status': (_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}') },
      }),
    );
    const get = async (path: string) => {
      const res = await fetch(`${l.url}${path}`);
      return [res.status, await res.text()] as const;
    };
    expect(await get('/healthz')).toEqual([200, 'Not Active']);
    expect(await get('/readyz?verbose')).toEqual([503, 'caches not synced']);
    active = true;
    ready = true;
    expect(await get('/healthz')).toEqual([200, 'Active']);
    expect(await get('/readyz')).toEqual([200, 'ready']);
    expect(await get('/status')).toEqual([200, '{"ok":true}']);
    expect((await get('/metrics'))[0]).toBe(404);
  });

  it('reaches a listener on every interface ("" host) through 127.0.0.1', async () => {
    const l = await start(probeListener({ active: () => true, ready: () => true, notReadyText: '' }), '');
    expect(l.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${l.url}/healthz`)).status).toBe(200);
  });
});

describe('metricsListener', () => {
  it('serves the registry at /metrics, 500 when collection fails, 404 elsewhere', async () => {
    const registry = new Registry();
    new Counter({ name: 'demo_total', help: 'demo', registers: [registry] }).inc(3);
    const l = await start(metricsListener(registry, silent));
    const res = await fetch(`${l.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(registry.contentType);
    expect(await res.text()).toContain('demo_total 3');
    expect((await fetch(`${l.url}/other`)).status).toBe(404);
    const broken = await start(metricsListener({ contentType: 'text/plain', metrics: () => Promise.reject(new Error('boom')) }, silent));
    expect((await fetch(`${broken.url}/metrics`)).status).toBe(500);
  });
});

describe('closeServer', () => {
  it('closes at once with an idle keep-alive connection open, and is idempotent', async () => {
    const l = await start(probeListener({ active: () => true, ready: () => true, notReadyText: '' }));
    const agentRes = await fetch(`${l.url}/healthz`, { keepalive: true });
    await agentRes.text();
    await l.close();
    await l.close();
    expect(l.server.listening).toBe(false);
  });

  it('gives a request in flight the grace period, then closes its connection', async () => {
    let hold: (() => void) | undefined;
    const l = await start((_req, res) => {
      hold = () => res.end('late');
    });
    const answered = new Promise<string>((resolve) => {
      request(`${l.url}/slow`, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      })
        .on('error', (e) => resolve(`error: ${e.message}`))
        .end();
    });
    while (hold === undefined) await new Promise((r) => setImmediate(r));
    const closed = closeServer(l.server, 60_000);
    hold();
    expect(await answered).toBe('late');
    await closed;

    const stuck = await start(() => {
      // never answers
    });
    const refused = new Promise<string>((resolve) => {
      request(`${stuck.url}/stuck`, () => resolve('answered')).on('error', (e) => resolve(e.message)).end();
    });
    while (stuck.server.listening && (await connections(stuck)) === 0) await new Promise((r) => setImmediate(r));
    await closeServer(stuck.server, 10);
    expect(await refused).toBe('socket hang up');
  });
});

function connections(l: HttpListener): Promise<number> {
  return new Promise((resolve) => l.server.getConnections((_e, n) => resolve(n)));
}
