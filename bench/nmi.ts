// `npm run bench -- nmi [--duration-ms=N] [--rounds=N] [--cold=N] [--burst=N] [--flood-pods=N] [--flood-requests=N]
// [--cpu-prof-dir=DIR] [--only=wrk]`: NMI's token path, from one run. `--only=wrk` measures only the wrk rows (NMI and
// the bare server, 1 and 64 clients), for a quick ratio on a shared machine; `--only=serve` sets up the same NMI and bare
// server, prints their URLs, pids and the warm path, and waits for SIGINT (for profiling by hand).
//
//  * warm path (token cached): p50/p99 latency and requests/s at 1 and 64 concurrent clients, beside a bare node:http
//    server answering a fixed JSON of the same size on the same machine (the physical limit here), as a ratio;
//  * cold path (cache miss): latency of requests for a resource never asked before (NMI -> IMDS emulator -> signer);
//  * the number of upstream IMDS token calls for 1,000 concurrent first requests for one identity;
//  * a flood (issue 10 row 10): 8 pods of one namespace, with no identity, each holding 2,048 token requests (a 429 is
//    retried after its Retry-After), against a second NMI with the deployed defaults (waits, caps): another
//    namespace's pod's first request, its warm p99 meanwhile, and NMI's peak RSS (VmHWM) against the 512Mi limit.
//
// Processes: NMI runs as its own process exactly as deployed (`tsx cmd/nmi.ts`, info logging, stdout drained), the bare
// server in another child; this process hosts the Kubernetes and Azure emulators (idle while the warm path is measured)
// and the load generator (undici, keep-alive, one connection per client, sockets bound to the pod's IP). So NMI and
// the load generator never share an event loop.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Agent } from 'undici';
import { decodeToken } from '../src/sandbox/cloud/index.js';
import { load, medianRun, once, percentile, type LoadResult } from './lib/http-load.js';
import { FAST_WAITS, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldIdentity, type WorldPod } from '../test/helpers/nmi-world.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

interface Options {
  /** `--cpu-prof-dir=DIR`: write a CPU profile of the NMI process there (node --cpu-prof) for finding hot spots. */
  readonly cpuProfDir: string | undefined;
  readonly durationMs: number;
  /** NMI and bare are measured alternately this many times; the median round is reported (the machine is shared). */
  readonly rounds: number;
  readonly cold: number;
  readonly burst: number;
  readonly floodPods: number;
  readonly floodRequests: number;
  /** `--only=wrk`: only the wrk rows; `--only=serve`: set up and wait. */
  readonly only: 'wrk' | 'serve' | undefined;
}

export async function main(args: readonly string[]): Promise<void> {
  const opts = parseArgs(args);
  const world = await startNmiWorld({ startNmi: false });
  const dir = await mkdtemp(join(tmpdir(), 'bench-nmi-'));
  const children: ChildProcess[] = [];
  try {
    const kubeconfig = join(dir, 'kubeconfig');
    await world.api.server.writeKubeconfig(kubeconfig);
    const warmPod = await world.pod('bench-warm', '127.0.4.1');
    const warmId = await world.managedIdentity('bench-warm-id');
    await world.assign(warmPod, warmId);

    // The cold path asks for 200 new resources in a row from one pod: measured without the per-pod miss limit.
    const nmi = await startNmiProcess(kubeconfig, world.imds.url, opts.cpuProfDir, [...fastWaitArgs(), '--pod-token-miss-rate=0']);
    children.push(nmi.child);
    const bare = await startBareServer();
    children.push(bare.child);

    await untilServed(nmi.url, warmPod.ip, warmId);
    const warmPath = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`;
    const sample = await once(nmi.url, warmPod.ip, warmPath);
    bare.setBody(sample.body);

    if (opts.only === 'serve') {
      const wrkPod = await world.pod('bench-wrk', '127.0.0.1');
      await world.assign(wrkPod, warmId);
      await untilServed(nmi.url, wrkPod.ip, warmId);
      console.log(JSON.stringify({ nmi: nmi.url + warmPath, nmiPid: nmi.child.pid, bare: bare.url + warmPath, barePid: bare.child.pid }));
      await new Promise((resolve) => process.once('SIGINT', resolve));
      return;
    }
    if (opts.only === 'wrk') {
      const wrkRows = await wrkRowsFor(world, nmi.url, bare.url, warmPath, warmId, opts.durationMs);
      if (wrkRows.length > 0) printWrk(wrkRows);
      else console.log('\n(wrk is not installed: `apt-get install -y wrk`)');
      return;
    }

    // The same NMI with the audit trail off, and with a record per request (to a file): the default (aggregate) above
    // must stay within 10 % of off.
    const nmiAuditOff = await startNmiProcess(kubeconfig, world.imds.url, undefined, [...fastWaitArgs(), '--pod-token-miss-rate=0', '--audit-log=off']);
    children.push(nmiAuditOff.child);
    const nmiAuditAll = await startNmiProcess(kubeconfig, world.imds.url, undefined, [
      ...fastWaitArgs(),
      '--pod-token-miss-rate=0',
      '--audit-log=all',
      `--audit-log-file=${join(dir, 'audit.jsonl')}`,
    ]);
    children.push(nmiAuditAll.child);
    await untilServed(nmiAuditOff.url, warmPod.ip, warmId);
    await untilServed(nmiAuditAll.url, warmPod.ip, warmId);

    const rows: Array<{ nmi: LoadResult; bare: LoadResult }> = [];
    const auditRows: AuditRow[] = [];
    for (const clients of [1, 64]) {
      const nmiRuns: LoadResult[] = [];
      const bareRuns: LoadResult[] = [];
      const offRuns: LoadResult[] = [];
      const allRuns: LoadResult[] = [];
      for (let round = 0; round < opts.rounds; round++) {
        nmiRuns.push(await load(nmi.url, warmPod.ip, warmPath, clients, opts.durationMs));
        offRuns.push(await load(nmiAuditOff.url, warmPod.ip, warmPath, clients, opts.durationMs));
        bareRuns.push(await load(bare.url, warmPod.ip, warmPath, clients, opts.durationMs));
        allRuns.push(await load(nmiAuditAll.url, warmPod.ip, warmPath, clients, opts.durationMs));
      }
      rows.push({ nmi: medianRun(nmiRuns), bare: medianRun(bareRuns) });
      auditRows.push({ aggregate: medianRun(nmiRuns), off: medianRun(offRuns), all: medianRun(allRuns) });
    }
    nmiAuditOff.child.kill('SIGTERM');
    nmiAuditAll.child.kill('SIGTERM');

    // The same warm path driven by wrk (C, its own process) when it is installed: the undici load generator above shares
    // the bench process's event loop, and its own cost shows in both columns' p99. wrk connects from 127.0.0.1, so
    // a pod at that address holds the identity.
    const wrkRows = await wrkRowsFor(world, nmi.url, bare.url, warmPath, warmId, opts.durationMs);

    const cold = await coldPath(nmi.url, warmPod.ip, opts.cold);
    const burst = await burstOfFirstRequests(world, nmi.url, opts.burst);
    // An NMI that dies under the flood (it did before the caps: heap out of memory) is a result, not a bench failure.
    const flood = await floodOfWaitingRequests(world, kubeconfig, opts, children).catch((error: unknown) => (error instanceof Error ? error : new Error(String(error))));

    printReport(rows, cold, burst, opts, nmi.child.pid ?? 0, bare.child.pid ?? 0);
    printAudit(auditRows);
    printFlood(flood);
    if (wrkRows.length > 0) printWrk(wrkRows);
    else console.log('\n(wrk is not installed: `apt-get install -y wrk` adds a second measurement with a C load generator)');
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    await world.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export default main;

/** The warm path driven by wrk at 1 and 64 clients, NMI then bare; none when wrk is not installed. */
async function wrkRowsFor(world: NmiWorld, nmiUrl: string, bareUrl: string, warmPath: string, identity: WorldIdentity, durationMs: number) {
  const rows: Array<{ clients: number; nmi: LoadResult; bare: LoadResult }> = [];
  if (!(await hasWrk())) return rows;
  const wrkPod = await world.pod('bench-wrk', '127.0.0.1');
  await world.assign(wrkPod, identity);
  await untilServed(nmiUrl, wrkPod.ip, identity);
  for (const clients of [1, 64]) {
    rows.push({
      clients,
      nmi: await wrkLoad(nmiUrl + warmPath, clients, durationMs),
      bare: await wrkLoad(bareUrl + warmPath, clients, durationMs),
    });
  }
  return rows;
}

async function hasWrk(): Promise<boolean> {
  return new Promise((resolve) => execFile('wrk', ['--version'], (error) => resolve(error === null || (error as { code?: unknown }).code === 1)));
}

/** wrk -c clients -t1 with the Metadata header; requests/s and the 50th/99th latency percentiles it prints. */
async function wrkLoad(url: string, clients: number, durationMs: number): Promise<LoadResult> {
  const seconds = Math.max(1, Math.round(durationMs / 1000));
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile('wrk', ['-t1', `-c${clients}`, `-d${seconds}s`, '--latency', '-H', 'Metadata: true', url], { timeout: 60_000 }, (error, out) =>
      error ? reject(error) : resolve(out),
    ),
  );
  const ms = (label: string) => {
    const m = new RegExp(`^\\s*${label}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(stdout);
    if (!m) return Number.NaN;
    const v = Number(m[1]);
    return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
  };
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? Number.NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  return { clients, requests: Math.round(rps * seconds), rps, p50: ms('50'), p99: ms('99'), errors: non2xx };
}

interface AuditRow {
  readonly aggregate: LoadResult;
  readonly off: LoadResult;
  readonly all: LoadResult;
}

/** Issue 14 item 5: the audit trail's cost on the warm path (the same NMI process build, alternating rounds). */
function printAudit(rows: readonly AuditRow[]): void {
  const f = (n: number, d = 2) => n.toFixed(d).padStart(9);
  const out = ['', 'warm path by --audit-log      off req/s  p99 ms | aggregate (default) req/s  p99 ms | all (file) req/s  p99 ms | aggregate/off'];
  for (const { off, aggregate, all } of rows) {
    out.push(
      `  ${String(off.clients).padStart(2)} client(s)             ${f(off.rps, 0)}${f(off.p99)} |           ${f(aggregate.rps, 0)}   ${f(aggregate.p99)} |  ${f(all.rps, 0)}  ${f(all.p99)} | ${(aggregate.rps / off.rps).toFixed(2)}`,
    );
  }
  const at64 = rows.find((r) => r.off.clients === 64);
  if (at64) {
    const ratio = at64.aggregate.rps / at64.off.rps;
    out.push(`target warm throughput with the default audit trail >= 0.9 x audit off at 64 clients: ${ratio.toFixed(2)} ${ratio >= 0.9 ? 'MET' : 'MISSED'}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

function printWrk(rows: ReadonlyArray<{ clients: number; nmi: LoadResult; bare: LoadResult }>): void {
  const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a').padStart(9);
  console.log('\nwarm path driven by wrk (C, own process)  NMI req/s   p50 ms   p99 ms |  bare req/s   p50 ms   p99 ms | NMI/bare');
  for (const { clients, nmi, bare } of rows) {
    console.log(
      `  ${String(clients).padStart(2)} client(s)                        ${f(nmi.rps, 0)}${f(nmi.p50)}${f(nmi.p99)} | ${f(bare.rps, 0)}  ${f(bare.p50)}${f(bare.p99)} | ${(nmi.rps / bare.rps).toFixed(2)}` +
        (nmi.errors + bare.errors > 0 ? `  (non-2xx: NMI ${nmi.errors}, bare ${bare.errors})` : ''),
    );
  }
}

function parseArgs(args: readonly string[]): Options {
  const get = (name: string, fallback: number) => {
    const hit = args.find((a) => a.startsWith(`--${name}=`));
    const value = hit === undefined ? fallback : Number(hit.slice(name.length + 3));
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name}: expected a positive number`);
    return value;
  };
  const prof = args.find((a) => a.startsWith('--cpu-prof-dir='));
  return {
    cpuProfDir: prof?.slice('--cpu-prof-dir='.length),
    durationMs: get('duration-ms', 2000),
    rounds: get('rounds', 3),
    cold: get('cold', 200),
    burst: get('burst', 1000),
    floodPods: get('flood-pods', 8),
    floodRequests: get('flood-requests', 2048),
    only: args.includes('--only=wrk') ? 'wrk' : args.includes('--only=serve') ? 'serve' : undefined,
  };
}

/* ------------------------------------------------------------------------------------------ processes */

/** cmd/nmi.ts compiled to JavaScript as the image runs it (tsx adds per-call helpers of its own to the hot path). */
let compiled: Promise<string> | undefined;
function compiledNmi(): Promise<string> {
  return (compiled ??= compileNmi());
}

async function compileNmi(): Promise<string> {
  const out = join(ROOT, 'tmp', 'bench-nmi-build');
  await new Promise<void>((resolve, reject) => {
    const tsc = spawn(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.json'), '--outDir', out, '--sourceMap', 'false'], { stdio: 'inherit' });
    tsc.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tsc exited with ${String(code)}`))));
  });
  return join(out, 'cmd', 'nmi.js');
}

/** Short identity waits, so that the warm/cold/burst measurements never wait for the informers. */
function fastWaitArgs(): string[] {
  return [
    `--retry-attempts-for-created=${FAST_WAITS.retryAttemptsForCreated}`,
    `--retry-attempts-for-assigned=${FAST_WAITS.retryAttemptsForAssigned}`,
    `--find-identity-retry-interval=${FAST_WAITS.findIdentityRetryIntervalMs}ms`,
  ];
}

async function startNmiProcess(
  kubeconfig: string,
  imdsUrl: string,
  cpuProfDir: string | undefined,
  extraArgs: readonly string[],
  nodeArgs: readonly string[] = [],
): Promise<{ child: ChildProcess; url: string }> {
  const args = [
    ...nodeArgs,
    ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []),
    await compiledNmi(),
    '--node=node-0',
    `--kubeconfig=${kubeconfig}`,
    '--nmi-port=0',
    '--http-probe-port=0',
    '--prometheus-port=0',
    '--probe-bind-address=127.0.0.1',
    '--metrics-bind-address=127.0.0.1',
    '--manage-iptables=false',
    `--imds-endpoint=${imdsUrl}`,
    '--kubelet-config=/nonexistent',
    '--cni-conf-dir=',
    '--prefetch=false',
    ...extraArgs,
    '--log-format=json',
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const timer = setTimeout(() => reject(new Error('NMI did not start within 30 s')), 30_000);
    child.once('exit', (code) => reject(new Error(`NMI exited with ${code} before it was ready`)));
    lines.on('line', (line) => {
      // Every line after "ready" is a log line: read and dropped, as a log shipper would.
      if (!line.includes('"ready":true')) return;
      clearTimeout(timer);
      resolve((JSON.parse(line) as { url: string }).url);
    });
  });
  return { child, url };
}

/** A bare node:http server answering a fixed JSON body (set to the size of NMI's answer) in its own process. */
async function startBareServer(): Promise<{ child: ChildProcess; url: string; setBody(body: string): void }> {
  const script = `
    const http = require('node:http');
    let body = Buffer.from('{}');
    process.stdin.setEncoding('utf8');
    let pending = '';
    process.stdin.on('data', (d) => { pending += d; const i = pending.indexOf('\\n'); if (i >= 0) { body = Buffer.from(pending.slice(0, i)); pending = pending.slice(i + 1); process.stdout.write('body\\n'); } });
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
      res.end(body);
    });
    server.keepAliveTimeout = 65000;
    server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: server.address().port }) + '\\n'));
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const iterator = lines[Symbol.asyncIterator]();
  const first = await iterator.next();
  const port = (JSON.parse(String(first.value)) as { port: number }).port;
  return {
    child,
    url: `http://127.0.0.1:${port}`,
    setBody(body) {
      child.stdin?.write(`${body.replace(/\n/g, '')}\n`);
    },
  };
}

/* ---------------------------------------------------------------------------------------------- load */

async function untilServed(origin: string, fromIp: string, identity: WorldIdentity): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const reply = await once(origin, fromIp, `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`);
    if (reply.status === 200 && decodeToken((JSON.parse(reply.body) as { access_token: string }).access_token).appid === identity.clientId) return;
    if (Date.now() > deadline) throw new Error(`NMI never served the bench pod: ${reply.status} ${reply.body}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Sequential requests, each for a resource never asked for before: every one is a cache miss that goes to IMDS. */
async function coldPath(origin: string, fromIp: string, count: number): Promise<{ p50: number; p99: number; errors: number }> {
  const agent = new Agent({ localAddress: fromIp, connections: 1 });
  const latencies: number[] = [];
  let errors = 0;
  try {
    for (let i = 0; i < count; i++) {
      const path = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(`https://cold-${i}-${Date.now()}.example`)}`;
      const started = performance.now();
      const res = await agent.request({ origin, path, method: 'GET', headers: { Metadata: 'true' } });
      await res.body.dump();
      latencies.push(performance.now() - started);
      if (res.statusCode !== 200) errors++;
    }
  } finally {
    await agent.close();
  }
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), errors };
}

/** A fresh pod and identity; `count` first requests at once; IMDS token calls counted from the emulator's log. */
async function burstOfFirstRequests(world: NmiWorld, origin: string, count: number): Promise<{ upstream: number; ok: number; requests: number }> {
  const pod = await world.pod('bench-burst', '127.0.4.2');
  const identity = await world.managedIdentity('bench-burst-id');
  await world.assign(pod, identity);
  // NMI (another process) sees the pod and AAI through its own informers: wait until it would serve the pod, using
  // a resource other than the burst's so that the burst's cache entry stays cold.
  const deadline = Date.now() + 20_000;
  for (;;) {
    const probe = await once(origin, pod.ip, `${TOKEN_PATH}?resource=${encodeURIComponent('https://probe.example')}`);
    if (probe.status === 200) break;
    if (Date.now() > deadline) throw new Error(`NMI never served the burst pod: ${probe.status} ${probe.body}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  world.azure.emulator.clearRequestLog();
  const agent = new Agent({ localAddress: pod.ip, connections: count, pipelining: 1 });
  let ok = 0;
  try {
    await Promise.all(
      Array.from({ length: count }, async () => {
        const res = await agent.request({ origin, path: `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`, method: 'GET', headers: { Metadata: 'true' } });
        const body = await res.body.text();
        if (res.statusCode === 200 && decodeToken((JSON.parse(body) as { access_token: string }).access_token).appid === identity.clientId) ok++;
      }),
    );
  } finally {
    await agent.close();
  }
  const upstream = world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token').length;
  return { upstream, ok, requests: count };
}

interface FloodPhase {
  readonly pods: number;
  readonly connections: number;
  readonly refusedFirstRound: number;
  readonly firstRequest: { status: number; ms: number; right: boolean };
  readonly quiet: LoadResult;
  readonly rssMiB: number;
  readonly answers: Record<string, number>;
}

interface FloodResult {
  readonly nmiPid: number;
  readonly quietBefore: LoadResult;
  readonly rssBeforeMiB: number;
  readonly onePod: FloodPhase;
  readonly manyPods: FloodPhase;
  readonly peakRssMiB: number;
}

/**
 * Issue 10 row 10 against a second NMI started with the deployed defaults (identity waits 16 x 5 s, waiting caps):
 * pods of team-b without an identity each hold `floodRequests` connections with a token request waiting (a 429 is
 * retried after its Retry-After, any other answer at once), first one pod, then `floodPods`; meanwhile a team-a pod
 * asks for a new resource (its first request) and then measures its warm path. NMI's RSS from /proc.
 */
async function floodOfWaitingRequests(world: NmiWorld, kubeconfig: string, opts: Options, children: ChildProcess[]): Promise<FloodResult> {
  const flooders = [];
  for (let i = 0; i < opts.floodPods; i++) flooders.push(await world.pod(`bench-flood-${i}`, `127.0.5.${i + 1}`, { namespace: 'team-b' }));
  const quiet = await world.pod('bench-quiet', '127.0.5.200', { namespace: 'team-a' });
  const quietId = await world.managedIdentity('bench-quiet-id', { namespace: 'team-a' });
  await world.assign(quiet, quietId);
  // As deployed: the image's NODE_OPTIONS (Dockerfile), and the old-space size Node derives from a 512Mi container
  // limit (V8 takes a quarter of the memory it is given); on this unconstrained machine V8 would size it from all RAM.
  const nmi = await startNmiProcess(kubeconfig, world.imds.url, undefined, [], ['--max-semi-space-size=4', '--max-old-space-size=128']);
  children.push(nmi.child);
  const pid = nmi.child.pid ?? 0;
  let exited: string | undefined;
  nmi.child.once('exit', (code, signal) => (exited = `exit code ${String(code)}, signal ${String(signal)}`));
  await untilServed(nmi.url, quiet.ip, quietId);
  const warmPath = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`;
  const quietBefore = await load(nmi.url, quiet.ip, warmPath, 1, opts.durationMs);
  const rssBeforeMiB = procStatusMiB(pid, 'VmRSS');
  let firstResource = 0;

  const phase = async (pods: readonly WorldPod[]): Promise<FloodPhase> => {
    const floodPath = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent('https://flood.example')}`;
    // The flood runs in its own process: in this one its event loop would delay the quiet pod's measurement.
    const flood = await startFloodProcess(nmi.url, floodPath, pods.map((p) => p.ip), opts.floodRequests);
    children.push(flood.child);
    const connections = pods.length * opts.floodRequests;
    // Every connection has sent its first request, and all those NMI would not hold have been refused (defaults:
    // 1024 waiting per pod, 2048 in all; connections 1024 per pod, 8192 in all).
    const held = Math.min(2048, pods.length * Math.min(1024, opts.floodRequests));
    const deadline = Date.now() + 60_000;
    while (flood.stats().refusedFirst < connections - held && Date.now() < deadline && exited === undefined) await new Promise((r) => setTimeout(r, 50));
    if (exited !== undefined) {
      flood.child.kill('SIGKILL');
      throw new Error(`NMI (process ${pid}) exited under the flood of ${pods.length} pod(s) x ${opts.floodRequests}: ${exited}`);
    }
    const refusedFirstRound = flood.stats().refusedFirst;

    const started = performance.now();
    const first = await once(nmi.url, quiet.ip, `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(`https://first-${firstResource++}.example`)}`);
    const ms = performance.now() - started;
    const right = first.status === 200 && decodeToken((JSON.parse(first.body) as { access_token: string }).access_token).appid === quietId.clientId;
    const quiet2 = await load(nmi.url, quiet.ip, warmPath, 1, opts.durationMs);
    const rssMiB = procStatusMiB(pid, 'VmRSS');
    const answers = { ...flood.stats().answers };
    await flood.stop();
    return { pods: pods.length, connections, refusedFirstRound, firstRequest: { status: first.status, ms, right }, quiet: quiet2, rssMiB, answers };
  };

  const onePod = await phase(flooders.slice(0, 1));
  const manyPods = await phase(flooders);
  return { nmiPid: pid, quietBefore, rssBeforeMiB, onePod, manyPods, peakRssMiB: procStatusMiB(pid, 'VmHWM') };
}

interface FloodStats {
  refusedFirst: number;
  answers: Record<string, number>;
}

/**
 * A child process whose undici agents, bound to each flooding pod's IP, keep `perIp` token requests each in flight:
 * a 429 is retried after its Retry-After (1 s), a closed connection after 1 s too, anything else at once. It reports
 * on stdout every 100 ms how many first requests were answered (any answer: the held ones are not) and the statuses.
 */
async function startFloodProcess(
  origin: string,
  path: string,
  ips: readonly string[],
  perIp: number,
): Promise<{ child: ChildProcess; stats(): FloodStats; stop(): Promise<FloodStats> }> {
  const script = `
    const { Agent } = require('undici');
    const { origin, path, ips, perIp } = JSON.parse(process.argv[1]);
    const answers = {};
    let refusedFirst = 0;
    let stopping = false;
    const agents = ips.map((ip) => new Agent({ localAddress: ip, connections: perIp, pipelining: 1, keepAliveTimeout: 120000, headersTimeout: 0, bodyTimeout: 0 }));
    const loops = agents.flatMap((agent) => Array.from({ length: perIp }, async () => {
      let first = true;
      while (!stopping) {
        let status = -1;
        try {
          const res = await agent.request({ origin, path, method: 'GET', headers: { Metadata: 'true' } });
          await res.body.dump();
          status = res.statusCode;
        } catch {}
        answers[status] = (answers[status] || 0) + 1;
        if (first) refusedFirst++;
        first = false;
        if (status === 429 || status === -1) await new Promise((r) => setTimeout(r, 1000));
      }
    }));
    const report = () => process.stdout.write(JSON.stringify({ refusedFirst, answers }) + '\\n');
    const timer = setInterval(report, 100);
    process.stdin.once('data', async () => {
      stopping = true;
      clearInterval(timer);
      await Promise.all(agents.map((a) => a.destroy()));
      await Promise.all(loops);
      report();
      process.exit(0);
    });
  `;
  const child = spawn(process.execPath, ['-e', script, JSON.stringify({ origin, path, ips, perIp })], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  let last: FloodStats = { refusedFirst: 0, answers: {} };
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on('line', (line) => {
    last = JSON.parse(line) as FloodStats;
  });
  return {
    child,
    stats: () => last,
    stop: async () => {
      const exited = new Promise((r) => child.once('close', r));
      child.stdin?.write('stop\n');
      await exited;
      return last;
    },
  };
}

function procStatusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

function printFlood(f: FloodResult | Error): void {
  if (f instanceof Error) {
    process.stdout.write(`\nflood of waiting requests (issue 10 row 10): ${f.message}\ntarget another namespace's first request served during each flood: MISSED\n`);
    return;
  }
  const lat = (r: LoadResult) => `p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.rps.toFixed(0)} req/s${r.errors > 0 ? `, errors ${r.errors}` : ''}`;
  const out: string[] = [];
  out.push('');
  out.push(`flood of waiting requests (issue 10 row 10), second NMI (process ${f.nmiPid}) with the deployed defaults, the image's --max-semi-space-size=4`);
  out.push('  and --max-old-space-size=128 (what Node derives from the 512Mi limit);');
  out.push('  team-b pods have no identity (each request waits up to 80 s); a 429 or a closed connection is retried after 1 s');
  out.push(`  another pod (team-a), warm path, 1 client, no flood:    ${lat(f.quietBefore)}; NMI RSS ${f.rssBeforeMiB.toFixed(0)} MiB`);
  for (const p of [f.onePod, f.manyPods]) {
    out.push(`  ${p.pods} pod(s) x ${p.connections / p.pods} connections (${p.connections}): ${p.refusedFirstRound} first requests refused (429 or connection closed), the rest held`);
    out.push(
      `    another namespace's first request (IMDS miss): HTTP ${p.firstRequest.status} in ${p.firstRequest.ms.toFixed(1)} ms${p.firstRequest.right ? ', its own token' : ', NOT its token'}`,
    );
    out.push(`    another pod's warm path meanwhile:  ${lat(p.quiet)}; NMI RSS ${p.rssMiB.toFixed(0)} MiB`);
    out.push(`    flood answers by status until then: ${Object.entries(p.answers).map(([k, v]) => `${k === '-1' ? 'closed' : k} ${v}`).join(', ')}`);
  }
  const served = [f.onePod, f.manyPods].every((p) => p.firstRequest.status === 200 && p.firstRequest.right);
  out.push(`  NMI peak RSS (VmHWM): ${f.peakRssMiB.toFixed(0)} MiB; the manifests' limit is 512 MiB`);
  out.push(`target another namespace's first request served during each flood: ${served ? 'MET' : 'MISSED'}`);
  out.push(`target NMI peak RSS under the flood <= 256 MiB (half the limit): ${f.peakRssMiB.toFixed(0)} MiB ${f.peakRssMiB <= 256 ? 'MET' : 'MISSED'}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

/** The round with the median throughput (its own latencies), so one disturbed round does not decide the figures. */
/* ---------------------------------------------------------------------------------------------- report */

function printReport(
  rows: ReadonlyArray<{ nmi: LoadResult; bare: LoadResult }>,
  cold: { p50: number; p99: number; errors: number },
  burst: { upstream: number; ok: number; requests: number },
  opts: Options,
  nmiPid: number,
  barePid: number,
): void {
  const f = (n: number, d = 2) => n.toFixed(d).padStart(9);
  const out: string[] = [];
  out.push(
    `NMI bench — node ${process.version}, ${availableParallelism()} CPUs, load average ${loadavg()[0]?.toFixed(2)}; ` +
      `${opts.durationMs} ms per measurement, median of ${opts.rounds} alternating rounds`,
  );
  out.push(`  NMI: child process ${nmiPid} (cmd/nmi.ts compiled to JavaScript as in the image, info logs drained); bare node:http: child process ${barePid};`);
  out.push('  load generator: undici keep-alive in the bench process, one connection per client, bound to the pod IP');
  out.push('');
  out.push('warm path (cached token)    NMI req/s   p50 ms   p99 ms |  bare req/s   p50 ms   p99 ms | NMI/bare throughput');
  for (const { nmi, bare } of rows) {
    out.push(
      `  ${String(nmi.clients).padStart(2)} client(s)            ${f(nmi.rps, 0)}${f(nmi.p50)}${f(nmi.p99)} | ${f(bare.rps, 0)}  ${f(bare.p50)}${f(bare.p99)} | ${(nmi.rps / bare.rps).toFixed(2)}` +
        (nmi.errors + bare.errors > 0 ? `  (errors: NMI ${nmi.errors}, bare ${bare.errors})` : ''),
    );
  }
  const at64 = rows.find((r) => r.nmi.clients === 64);
  out.push('');
  out.push(`cold path (cache miss -> IMDS emulator in the bench process, ${opts.cold} requests): p50 ${cold.p50.toFixed(2)} ms, p99 ${cold.p99.toFixed(2)} ms${cold.errors ? `, errors ${cold.errors}` : ''}`);
  out.push(`${burst.requests} concurrent first requests for one identity: ${burst.upstream} upstream IMDS token call(s), ${burst.ok}/${burst.requests} answered with the right token`);
  out.push('');
  if (at64) {
    const ratio = at64.nmi.rps / at64.bare.rps;
    out.push(`target warm throughput >= 0.5 x bare at 64 clients: ${ratio.toFixed(2)} ${ratio >= 0.5 ? 'MET' : 'MISSED'}`);
    out.push(`target warm p99 <= 5 ms at 64 clients:              ${at64.nmi.p99.toFixed(2)} ms ${at64.nmi.p99 <= 5 ? 'MET' : 'MISSED'}`);
  }
  out.push(`target exactly 1 upstream call for the concurrent misses: ${burst.upstream} ${burst.upstream === 1 && burst.ok === burst.requests ? 'MET' : 'MISSED'}`);
  process.stdout.write(`${out.join('\n')}\n`);
}
