// `--enableProfile`: a CPU profile and a heap snapshot over HTTP on 127.0.0.1, from node:inspector in this process.
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startProfileServer, type ProfileServer } from '../../src/common/profile.js';

let server: ProfileServer;
beforeEach(async () => {
  server = await startProfileServer({ port: 0, logger: pino({ level: 'silent' }) });
});
afterEach(async () => {
  await server?.close();
});

describe('profiling endpoint', () => {
  it('listens on 127.0.0.1 only', () => {
    expect(new URL(server.url).hostname).toBe('127.0.0.1');
  });

  it('returns a CPU profile of the asked length that DevTools can open', async () => {
    const started = Date.now();
    const res = await fetch(`${server.url}/debug/pprof/profile?seconds=0.3`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toMatch(/\.cpuprofile"$/);
    const profile = (await res.json()) as { nodes: { callFrame: { functionName: string } }[]; startTime: number; endTime: number; samples: number[] };
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(profile.nodes.length).toBeGreaterThan(0);
    expect(profile.nodes[0]!.callFrame.functionName).toBe('(root)');
    expect(profile.endTime - profile.startTime).toBeGreaterThanOrEqual(250_000); // microseconds
  });

  it('returns a heap snapshot', async () => {
    const res = await fetch(`${server.url}/debug/pprof/heap`);
    expect(res.status).toBe(200);
    const snapshot = (await res.json()) as { snapshot: { meta: { node_fields: string[] }; node_count: number } };
    expect(snapshot.snapshot.meta.node_fields).toContain('name');
    expect(snapshot.snapshot.node_count).toBeGreaterThan(1000);
  });

  it('refuses a bad length, a second profile at once, and other paths', async () => {
    for (const seconds of ['0', '-1', 'abc', '301']) {
      const res = await fetch(`${server.url}/debug/pprof/profile?seconds=${seconds}`);
      expect(res.status).toBe(400);
    }
    const first = fetch(`${server.url}/debug/pprof/profile?seconds=1`);
    // A bad length answers 400 when idle, 409 while the first profile runs: wait for the latter.
    let status = 0;
    for (let i = 0; i < 200 && status !== 409; i++) {
      status = (await fetch(`${server.url}/debug/pprof/profile?seconds=abc`)).status;
    }
    expect(status).toBe(409);
    expect((await fetch(`${server.url}/debug/pprof/heap`)).status).toBe(409);
    expect((await first).status).toBe(200);
    expect((await fetch(`${server.url}/debug/pprof/other`)).status).toBe(404);
  });
});
