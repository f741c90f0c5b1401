// Issue 14 item 5 on the real entry point (cmd/nmi.ts): audit records are JSON lines marked `audit: true` on stdout by
// default, even beside --log-format=text logs; --audit-log-file sends them to a file instead; the hits counted since
// the last flush are written when NMI stops; a file that cannot be written stops NMI at start with a clear error.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAST_WAITS, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldPod } from '../helpers/nmi-world.js';

const ROOT = join(import.meta.dirname, '..', '..');
const PATH = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`;

let world: NmiWorld;
let work: string;
let kubeconfig: string;
let pod: WorldPod;
const children: ChildProcess[] = [];

beforeAll(async () => {
  world = await startNmiWorld({ startNmi: false });
  work = mkdtempSync(join(tmpdir(), 'nmi-audit-'));
  kubeconfig = join(work, 'kubeconfig');
  await world.api.server.writeKubeconfig(kubeconfig);
  pod = await world.pod('audited', '127.0.1.61');
  await world.assign(pod, await world.managedIdentity('audited-id'));
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(async () => {
  await world?.stop();
  rmSync(work, { recursive: true, force: true });
});

interface Run {
  readonly child: ChildProcess;
  stdout(): string;
  output(): string;
  readonly exited: Promise<number | null>;
}

function runNmi(extra: readonly string[]): Run {
  const args = [
    '--import', 'tsx', join(ROOT, 'cmd', 'nmi.ts'),
    '--node=node-0', `--kubeconfig=${kubeconfig}`, '--manage-iptables=false', '--prefetch=false',
    '--nmi-port=0', '--http-probe-port=0', '--probe-bind-address=127.0.0.1', '--prometheus-port=0', '--metrics-bind-address=127.0.0.1',
    `--imds-endpoint=${world.imds.url}`, '--kubelet-config=/nonexistent', '--cni-conf-dir=',
    `--retry-attempts-for-created=${FAST_WAITS.retryAttemptsForCreated}`, `--find-identity-retry-interval=${FAST_WAITS.findIdentityRetryIntervalMs}ms`,
    ...extra,
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let all = '';
  child.stdout?.on('data', (d: Buffer) => ((out += d.toString()), (all += d.toString())));
  child.stderr?.on('data', (d: Buffer) => (all += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => out, output: () => all, exited };
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function nmiUrl(run: Run): string | undefined {
  const line = run.stdout().split('\n').find((l) => l.includes('"ready":true'));
  return line === undefined ? undefined : (JSON.parse(line) as { url: string }).url;
}

/** Starts NMI, gets the pod a token once from upstream and `hits` times from the cache, then stops NMI (SIGTERM). */
async function serveAndStop(run: Run, hits: number): Promise<void> {
  await until(() => nmiUrl(run) !== undefined, 'NMI ready');
  const url = nmiUrl(run) as string;
  await until(async () => (await world.agentFor(pod.ip).request({ origin: url, path: PATH, method: 'GET', headers: { Metadata: 'true' } }).then(async (r) => (await r.body.dump(), r.statusCode))) === 200, 'the pod served');
  for (let i = 0; i < hits; i++) {
    const r = await world.agentFor(pod.ip).request({ origin: url, path: PATH, method: 'GET', headers: { Metadata: 'true' } });
    await r.body.dump();
    expect(r.statusCode).toBe(200);
  }
  run.child.kill('SIGTERM');
  expect(await run.exited).toBe(0);
}

function auditRecords(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r['audit'] === true);
}

describe('NMI audit trail on the real entry point (issue 14 item 5)', () => {
  it('writes JSON records marked audit: true to stdout by default, beside text logs, and the counted hits at stop', async () => {
    const run = runNmi(['--log-format=text']);
    await serveAndStop(run, 5);
    const records = auditRecords(run.stdout());
    expect(records.find((r) => r['cache'] === 'miss')).toMatchObject({ app: 'nmi', node: 'node-0', decision: 'issued', path: 'binding', pod: { uid: pod.uid } });
    const counted = records.filter((r) => r['cache'] === 'hit');
    // Hits seen while waiting for the first 200 count too: at least the 5 asked for, all in one record at stop.
    expect(counted).toHaveLength(1);
    expect(counted[0]?.['count']).toBeGreaterThanOrEqual(5);
    // The logs themselves are still text.
    expect(run.stdout()).toMatch(/ INFO \[nmi\] NMI started/);
  });

  it('--audit-log-file: records go to the file (its directory created), none to stdout', async () => {
    const file = join(work, 'logs', 'audit.jsonl');
    const run = runNmi(['--log-format=json', `--audit-log-file=${file}`]);
    await serveAndStop(run, 3);
    const records = auditRecords(readFileSync(file, 'utf8'));
    expect(records.map((r) => r['cache'])).toEqual(expect.arrayContaining(['miss', 'hit']));
    expect(auditRecords(run.stdout())).toEqual([]);
  });

  it('--audit-log=all: a record per request; --audit-log=off: none', async () => {
    const all = runNmi(['--log-format=json', '--audit-log=all']);
    await serveAndStop(all, 4);
    const records = auditRecords(all.stdout());
    expect(records.filter((r) => r['cache'] === 'hit').every((r) => r['count'] === 1)).toBe(true);
    expect(records.filter((r) => r['cache'] === 'hit').length).toBeGreaterThanOrEqual(4);

    const off = runNmi(['--log-format=json', '--audit-log=off']);
    await serveAndStop(off, 2);
    expect(auditRecords(off.stdout())).toEqual([]);
  });

  it('refuses to start when --audit-log-file cannot be written, naming the flag', async () => {
    const notADirectory = join(work, 'plain-file');
    writeFileSync(notADirectory, '');
    const run = runNmi(['--log-format=json', `--audit-log-file=${join(notADirectory, 'audit.jsonl')}`]);
    expect(await run.exited).toBe(1);
    expect(run.output()).toContain('--audit-log-file cannot be written');
    expect(run.output()).not.toContain('"ready":true');
  });
});
