// The mains as a supervisor runs them: cmd/mic.ts in a child process, stopped by signals.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually, startMicWorld, type MicWorld } from './mic-world.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

let w: MicWorld;
let child: ChildProcess | undefined;
let dir: string | undefined;
let proxy: HoldingProxy | undefined;
beforeEach(async () => {
  w = await startMicWorld();
});
afterEach(async () => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  child = undefined;
  await proxy?.close();
  proxy = undefined;
  await w?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('cmd/mic.ts signals', () => {
  it('a second SIGTERM during the cleanup does not kill MIC before the cleanup ends', async () => {
    // MIC reaches the API server through a proxy that can hold every byte: while held, handing back the lease
    // (part of the cleanup) cannot finish, so the second signal surely lands mid-cleanup.
    proxy = await holdingProxy(new URL(w.api.server.url));
    const mic = await startChildMic(proxy.port);
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

interface ChildMic {
  readonly proc: ChildProcess;
  readonly probe: string;
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startChildMic(apiPort: number): Promise<ChildMic> {
  dir = await mkdtemp(join(tmpdir(), 'mic-entry-'));
  const kubeconfig = join(dir, 'kubeconfig');
  const azureJson = join(dir, 'azure.json');
  await w.api.server.writeKubeconfig(kubeconfig);
  const apiUrl = new URL(w.api.server.url);
  const text = await readFile(kubeconfig, 'utf8');
  await writeFile(kubeconfig, text.split(`${apiUrl.host}`).join(`127.0.0.1:${apiPort}`), { mode: 0o600 });
  const e = w.az.emulator;
  await writeFile(
    azureJson,
    JSON.stringify({
      cloud: 'AzurePublicCloud',
      tenantId: e.tenantId,
      aadClientId: w.az.servicePrincipal.clientId,
      aadClientSecret: w.az.servicePrincipal.secret,
      subscriptionId: e.subscriptionId,
      resourceGroup: w.rg,
    }),
  );
  const args = [
    '--import', 'tsx', join(ROOT, 'cmd/mic.ts'),
    `--kubeconfig=${kubeconfig}`, `--cloudconfig=${azureJson}`, `--arm-endpoint=${e.url}`,
    '--http-probe-port=0', '--prometheus-port=0', '--probe-bind-address=127.0.0.1', '--metrics-bind-address=127.0.0.1',
    '--leader-election-duration=2s', '--log-format=json',
  ];
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, MIC_POD_NAMESPACE: 'default', HOSTNAME: 'mic-entry', AZURE_AUTHORITY_HOST: e.url, NODE_EXTRA_CA_CERTS: e.caFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = proc;
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const probe = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child MIC not ready in time: ${out}`)), 20_000);
    const onData = (): void => {
      const line = out.split('\n').find((l) => l.includes('"ready":true'));
      if (line === undefined) return;
      clearTimeout(timer);
      proc.stdout?.off('data', onData);
      resolve((JSON.parse(line) as { probe: string }).probe);
    };
    proc.stdout?.on('data', onData);
    void exited.then((x) => reject(new Error(`child MIC exited with ${JSON.stringify(x)}: ${out}`)));
  });
  return { proc, probe, output: () => out, exited };
}

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
