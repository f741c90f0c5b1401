// Attack row 13 of issue 10: a kubelet told `--network-plugin kubenet` (or a kubelet >= 1.24 on a bridge CNI network)
// must still make NMI refuse to start unless --allow-network-plugin-kubenet. Runs the real cmd/nmi.ts with temp files.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const KUBENET_CONFLIST = JSON.stringify({
  cniVersion: '0.3.1',
  name: 'kubenet',
  plugins: [{ type: 'bridge', bridge: 'cbr0', ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.0.0/24' }]] } }, { type: 'portmap', capabilities: { portMappings: true } }],
});
const AZURE_CONFLIST = JSON.stringify({ cniVersion: '0.3.0', name: 'azure', plugins: [{ type: 'azure-vnet', ipam: { type: 'azure-vnet-ipam' } }] });

let work: string;
let kubeconfig: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'nmi-kubenet-'));
  kubeconfig = join(work, 'kubeconfig');
  // Nothing listens on port 1: NMI's informers just retry, which is all a started NMI needs here.
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]',
      'users: [{name: u, user: {token: t}}]',
      'contexts: [{name: x, context: {cluster: c, user: u}}]',
      'current-context: x',
      '',
    ].join('\n'),
  );
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Node {
  readonly kubelet: string;
  readonly cni: string;
}
function node(name: string, kubeletDefaults: string | undefined, cniFiles: Record<string, string> = {}): Node {
  const dir = join(work, name);
  const cni = join(dir, 'net.d');
  mkdirSync(cni, { recursive: true });
  const kubelet = join(dir, 'kubelet');
  if (kubeletDefaults !== undefined) writeFileSync(kubelet, kubeletDefaults);
  for (const [file, text] of Object.entries(cniFiles)) writeFileSync(join(cni, file), text);
  return { kubelet, cni };
}

interface Run {
  readonly child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}
function runNmi(n: Node, extra: readonly string[] = []): Run {
  const args = [
    '--import', 'tsx', join(ROOT, 'cmd', 'nmi.ts'),
    '--node=node-0', `--kubeconfig=${kubeconfig}`, '--log-format=json', '--manage-iptables=false',
    '--nmi-port=0', '--http-probe-port=0', '--probe-bind-address=127.0.0.1', '--prometheus-port=0', '--metrics-bind-address=127.0.0.1',
    '--imds-endpoint=http://127.0.0.1:1', `--kubelet-config=${n.kubelet}`, `--cni-conf-dir=${n.cni}`, ...extra,
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the kubenet guard, on the real entry point', () => {
  it.each([
    ['--network-plugin kubenet', 'KUBELET_FLAGS=--address=0.0.0.0 --network-plugin kubenet --max-pods=30\n'],
    ['--network-plugin="kubenet"', 'KUBELET_FLAGS=--network-plugin="kubenet"\n'],
    ['--network-plugin=kubenet (quoted value)', 'KUBELET_FLAGS="--pod-infra-container-image=x --network-plugin=kubenet"\n'],
  ])('refuses to start when the kubelet defaults say %s', async (_form, text) => {
    const run = runNmi(node(`flags-${children.length}`, text));
    expect(await run.exited).toBe(1);
    expect(run.output()).toContain('not supported for Kubenet');
    expect(run.output()).toContain('--allow-network-plugin-kubenet=true');
    expect(run.output()).toContain('KUBELET_FLAGS');
    expect(run.output()).not.toContain('"ready":true');
  }, 30_000);

  it('refuses to start on a kubelet without --network-plugin whose CNI network is the bridge kubenet conflist', async () => {
    const n = node('cni-kubenet', 'KUBELET_FLAGS=--max-pods=30\n', { '10-containerd-net.conflist': KUBENET_CONFLIST, '99-azure.conflist': AZURE_CONFLIST });
    const run = runNmi(n);
    expect(await run.exited).toBe(1);
    expect(run.output()).toContain('10-containerd-net.conflist');
    expect(run.output()).toContain('not supported for Kubenet');
  }, 30_000);

  it('starts on Azure CNI, and on kubenet when explicitly allowed', async () => {
    const azure = runNmi(node('cni-azure', 'KUBELET_FLAGS=--max-pods=30\n', { '10-azure.conflist': AZURE_CONFLIST }));
    await until(() => azure.output().includes('"ready":true'), 'NMI on Azure CNI to start');
    const allowed = runNmi(node('allowed', 'KUBELET_FLAGS=--network-plugin kubenet\n', { '10-containerd-net.conflist': KUBENET_CONFLIST }), [
      '--allow-network-plugin-kubenet=true',
    ]);
    await until(() => allowed.output().includes('"ready":true'), 'NMI allowed on kubenet to start');
    for (const r of [azure, allowed]) {
      r.child.kill('SIGTERM');
      expect(await r.exited).toBe(0);
    }
  }, 40_000);

  it('exits when the runtime writes a kubenet CNI config after NMI started', async () => {
    const n = node('late', undefined);
    const run = runNmi(n);
    await until(() => run.output().includes('"ready":true'), 'NMI to start');
    expect(run.child.exitCode).toBeNull();
    writeFileSync(join(n.cni, '10-containerd-net.conflist'), KUBENET_CONFLIST);
    expect(await run.exited).toBe(1);
    expect(run.output()).toContain('not supported for Kubenet');
  }, 40_000);
});
