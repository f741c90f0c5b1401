// The mains as a supervisor runs them: cmd/mic.ts in a child process, stopped by signals.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually, spawnChildMic, startMicWorld, type ChildMic, type MicWorld } from './mic-world.js';

let w: MicWorld;
let child: ChildMic | undefined;
let proxy: HoldingProxy | undefined;
beforeEach(async () => {
  w = await startMicWorld();
});
afterEach(async () => {
  await child?.dispose();
  child = undefined;
  await proxy?.close();
  proxy = undefined;
  await w?.stop();
});

describe('cmd/mic.ts signals', () => {
  it('a second SIGTERM during the cleanup does not kill MIC before the cleanup ends', async () => {
    // MIC reaches the API server through a proxy that can hold every byte: while held, handing back the lease
    // (part of the cleanup) cannot finish, so the second signal surely lands mid-cleanup.
    proxy = await holdingProxy(new URL(w.api.server.url));
    const mic = await spawnChildMic(w, { instance: 'mic-entry', apiHost: `127.0.0.1:${proxy.port}` });
    child = mic;
    await eventually(async () => expect(await (await fetch(`${mic.probe}/healthz`)).text()).toBe('Active'));

    proxy.hold();
    mic.proc.kill('SIGTERM');
    await eventually(() => expect(mic.output()).toContain('"msg":"stopping"'));
    mic.proc.kill('SIGTERM');
    // With `process.once` the second signal meets Node's default action and the child dies here.
    const second = await Promise.race([
      mic.exited.then((x) => ({ killed: x })),
      eventually(() => expect(mic.output()).toContain('already stopping')).then(() => ({ killed: undefined })),
    ]);
    expect(second.killed).toBeUndefined();
    // Still alive and still cleaning up: the probe server is closed only at the end of stop().
    expect(mic.proc.exitCode).toBeNull();
    expect(mic.proc.signalCode).toBeNull();
    expect(mic.output()).not.toContain('MIC stopped');
    expect((await fetch(`${mic.probe}/healthz`)).status).toBe(200);

    proxy.release();
    const exit = await mic.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(mic.output()).toContain('MIC stopped');
  });
});

interface HoldingProxy {
  readonly port: number;
  /** Stops forwarding in both directions (connections stay open, bytes wait). */
  hold(): void;
  release(): void;
  close(): Promise<void>;
}

/** A TCP proxy to `target` (TLS passes through untouched) whose traffic can be held and released. */
async function holdingProxy(target: URL): Promise<HoldingProxy> {
  const pairs = new Set<readonly [Socket, Socket]>();
  let held = false;
  const server: Server = createServer((downstream) => {
    const upstream = connect(Number(target.port), target.hostname);
    const pair = [downstream, upstream] as const;
    pairs.add(pair);
    if (held) for (const s of pair) s.pause();
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    const drop = (): void => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    hold: () => {
      held = true;
      for (const pair of pairs) for (const s of pair) s.pause();
    },
    release: () => {
      held = false;
      for (const pair of pairs) for (const s of pair) s.resume();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [a, b] of pairs) {
          a.destroy();
          b.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
