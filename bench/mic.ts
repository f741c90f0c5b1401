// `npm run bench -- mic [--pods N] [--identities N] [--rss-pods N] [--qps N] [--poll-ms N] [--only vmss|vm]`
//
// MIC against the emulators, from one run:
//  1. cold convergence, 2 VMSS of 100 instances, 500 identities, 5,000 labelled pods (every AAI Assigned),
//     with the ARM PATCH count next to the minimum possible;
//  2. steady state on that world: new labelled pod → its AAI Assigned (p50/p99), ARM latency 0;
//  3. the same with every VMSS PATCH taking 2 s, split by what the pod needs (a VMSS attach, nothing, a VM attach),
//     showing that nothing waits behind a slow VMSS;
//  4. cold convergence with 200 VMs (same identities and pods), then scaled to 10,000 pods for MIC's peak RSS and its
//     live heap after convergence, and NMI's RSS with those 10,000 pods on the cluster;
//  5. run 4 again (convergence and the 10,000-pod peak) with MIC in a memory cgroup limited as the chart limits MIC's
//     container (mic.resources.limits.memory), where Node sizes V8's heap from that limit (`--mic-memory-limit=0` skips it).
// MIC and NMI run as child processes through cmd/mic.ts and cmd/nmi.ts with no V8 flags, so their RSS (VmHWM of that
// process) excludes the emulators and this driver, which run here.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { createMemoryCgroup, inCgroup, type MemoryCgroup } from './lib/memcg.js';
import { collectionPath, Plurals } from '../src/crds/names.js';
import { normalizeAssignedIdentity } from '../src/crds/normalize.js';
import { Reflector, type KubeObject } from '../src/kube/index.js';
import { startApiServer, type ApiServerHandle } from '../src/sandbox/apiserver/index.js';
import { startAzureEmulator, type AzureEmulator } from '../src/sandbox/cloud/index.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const RG = 'rg-bench';
const PER_PATCH = 150;

interface Options {
  readonly pods: number;
  readonly identities: number;
  readonly rssPods: number;
  readonly qps: number;
  readonly pollMs: number;
  readonly only: 'vmss' | 'vm' | undefined;
  readonly convergeOnly: boolean;
  readonly tsx: boolean;
  /** Extra node/V8 flags for the MIC process (none by default: the figures are for MIC as deployed). */
  readonly nodeArgs: string;
  /** Memory limit of the cgroup run in MiB (default: the chart's mic.resources.limits.memory); 0 skips that run. */
  readonly micMemoryLimitMib: number;
}

interface Row {
  readonly what: string;
  readonly value: string;
  readonly target: string;
}

export async function main(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      pods: { type: 'string', default: '5000' },
      identities: { type: 'string', default: '500' },
      'rss-pods': { type: 'string', default: '10000' },
      qps: { type: 'string', default: '2000' },
      'poll-ms': { type: 'string', default: '250' },
      only: { type: 'string' },
      'converge-only': { type: 'boolean', default: false },
      tsx: { type: 'boolean', default: false },
      'node-args': { type: 'string', default: '' },
      'mic-memory-limit': { type: 'string' },
    },
    strict: true,
  });
  const opts: Options = {
    pods: Number(values.pods),
    identities: Number(values.identities),
    rssPods: Number(values['rss-pods']),
    qps: Number(values.qps),
    pollMs: Number(values['poll-ms']),
    only: values.only === 'vmss' || values.only === 'vm' ? values.only : undefined,
    convergeOnly: values['converge-only'] === true,
    tsx: values.tsx === true,
    nodeArgs: values['node-args'] ?? '',
    micMemoryLimitMib: values['mic-memory-limit'] !== undefined ? Number(values['mic-memory-limit']) : await chartMicMemoryLimitMib(),
  };
  if (!Number.isFinite(opts.micMemoryLimitMib) || opts.micMemoryLimitMib < 0) throw new Error('--mic-memory-limit: expected MiB (0 skips the cgroup run)');
  const rows: Row[] = [];
  const notes: string[] = [];
  if (opts.only !== 'vm') await vmssRun(opts, rows, notes);
  if (opts.only !== 'vmss') await vmRun(opts, rows, notes);
  if (opts.only !== 'vmss' && !opts.convergeOnly && opts.micMemoryLimitMib > 0) await cgroupRun(opts, rows, notes);
  print(opts, rows, notes);
}

/* ------------------------------------------------------------------------------------------- runs */

async function vmssRun(opts: Options, rows: Row[], notes: string[]): Promise<void> {
  const w = await BenchWorld.start();
  try {
    const targets = [
      { kind: 'vmss' as const, name: 'ssa', nodes: 100 },
      { kind: 'vmss' as const, name: 'ssb', nodes: 100 },
    ];
    const nodes = await w.computeAndNodes(targets);
    const ids = await w.identities(opts.identities, 'id');
    const pods = await w.pods(opts.pods, nodes, ids, 'p');
    const cold = await w.startMicAndConverge(opts, pods.length);
    rows.push({ what: `converge from cold, 2 VMSS x 100 nodes, ${ids.length} identities, ${pods.length} pods`, value: `${fmtS(cold.fromStartMs)} (${fmtS(cold.fromReadyMs)} after MIC ready)`, target: '<= 10 s' });
    const patches = w.patchCount();
    rows.push({ what: 'ARM PATCH count (VMSS run) / minimum', value: `${patches} / ${w.minimumPatches(pods)}`, target: '= minimum' });
    notes.push(`VMSS run: ${cold.kubeWrites} Kubernetes writes by MIC while converging (${cold.writeDetail}); MIC peak RSS ${fmtMb(cold.peakRssKb)}; MIC CPU time ${fmtS(cold.micCpuMs)} (start-up included); emulator process busy ${pctOf(cold.emulatorCpu)} of one core meanwhile; load average at start ${cold.load.toFixed(1)} on ${cpus().length} cores.`);
    if (process.env['BENCH_MIC_HEAPSNAP']) await w.heapSnapshot();
    if (opts.convergeOnly) return;

    // Steady state, ARM latency 0: pods using identities already attached, and pods needing a new attach.
    const attached = await w.latency(
      Array.from({ length: 200 }, (_, i) => ({ name: `s-${i}`, node: nodes[(i * 37) % nodes.length]!, selector: ids[(i * 11) % ids.length]!.selector })),
      20,
    );
    rows.push({ what: 'steady state, new pod -> AAI Assigned (identity already on the VMSS), ARM latency 0', value: pct(attached), target: 'p99 <= 300 ms' });
    const fresh = await w.identities(20, 'fresh');
    const needsAttach = await w.latency(
      fresh.map((id, i) => ({ name: `f-${i}`, node: nodes[(i * 13) % nodes.length]!, selector: id.selector })),
      100,
    );
    rows.push({ what: 'steady state, new pod -> AAI Assigned (new identity: VMSS PATCH), ARM latency 0', value: pct(needsAttach), target: 'p99 <= 300 ms' });

    // Every VMSS PATCH takes 2 s: what must not wait behind it.
    const vmNodes = await w.computeAndNodes(Array.from({ length: 10 }, (_, i) => ({ kind: 'vm' as const, name: `extra-vm-${i}`, nodes: 1 })));
    await w.settle();
    w.azure.setLatency('vmss_patch', 2000);
    const slowIds = await w.identities(20, 'slow');
    const vmIds = await w.identities(20, 'vmfresh');
    const mixed = [
      ...slowIds.map((id, i) => ({ group: 'vmss-attach', name: `m-ss-${i}`, node: nodes[(i * 17) % nodes.length]!, selector: id.selector })),
      ...vmIds.map((id, i) => ({ group: 'vm-attach', name: `m-vm-${i}`, node: vmNodes[i % vmNodes.length]!, selector: id.selector })),
      ...Array.from({ length: 60 }, (_, i) => ({ group: 'attached', name: `m-at-${i}`, node: nodes[(i * 29) % nodes.length]!, selector: ids[(i * 7) % ids.length]!.selector })),
    ];
    shuffle(mixed);
    const slow = await w.latency(mixed, 25);
    const by = (g: string) => mixed.map((m, i) => (m.group === g ? slow[i]! : -1)).filter((x) => x >= 0);
    rows.push({ what: 'VMSS PATCH 2 s: pod whose identity must be attached to the VMSS', value: pct(by('vmss-attach')), target: '2 s PATCH, plus the one already running on that VMSS' });
    rows.push({ what: 'VMSS PATCH 2 s: pod whose identity is already on its VMSS', value: pct(by('attached')), target: 'p99 <= 500 ms (no wait)' });
    rows.push({ what: 'VMSS PATCH 2 s: pod on a VM needing a VM PATCH', value: pct(by('vm-attach')), target: 'p99 <= 500 ms (no wait)' });
    w.azure.setLatency('vmss_patch', 0);
    notes.push(`Steady-state pods were created ${20}-${100} ms apart; latency is from just before the pod POST to the AAI's Assigned status as seen on a watch.`);
  } finally {
    await w.stop();
  }
}

async function vmRun(opts: Options, rows: Row[], notes: string[]): Promise<void> {
  const w = await BenchWorld.start();
  try {
    const { nodes, ids, pods, cold } = await convergeVms(w, opts);
    rows.push({ what: `converge from cold, 200 VMs, ${ids.length} identities, ${pods.length} pods`, value: `${fmtS(cold.fromStartMs)} (${fmtS(cold.fromReadyMs)} after MIC ready)`, target: '<= 10 s' });
    rows.push({ what: 'ARM PATCH count (VM run) / minimum', value: `${w.patchCount()} / ${w.minimumPatches(pods)}`, target: '= minimum' });
    notes.push(`VM run: ${cold.kubeWrites} Kubernetes writes by MIC while converging (${cold.writeDetail}); MIC peak RSS ${fmtMb(cold.peakRssKb)}; MIC CPU time ${fmtS(cold.micCpuMs)} (start-up included); emulator process busy ${pctOf(cold.emulatorCpu)} of one core meanwhile; load average at start ${cold.load.toFixed(1)} on ${cpus().length} cores.`);

    const more = opts.rssPods - pods.length;
    if (more > 0) {
      const started = Date.now();
      const extra = await w.pods(more, nodes, ids, 'q');
      await w.waitAssigned(pods.length + extra.length, 120_000);
      await w.settle();
      const total = pods.length + extra.length;
      // Read before the heap snapshot, whose writing costs MIC memory of its own.
      const peak = w.peakRssKb();
      rows.push({ what: `MIC peak RSS with ${total} pods (VmHWM of the MIC process, no V8 flags)`, value: fmtMb(peak), target: '<= 250 MB' });
      const heap = await w.micLiveHeapBytes();
      rows.push({ what: `MIC live heap after convergence, ${total} pods (heap snapshot: V8 collects first)`, value: fmtMb(heap / 1024), target: '<= 60 MB' });
      notes.push(`Scaling ${pods.length} -> ${total} pods (creating the pods included) took ${fmtS(Date.now() - started)}.`);
      const nmi = await w.nmiRss(opts, nodes[0]!);
      rows.push({ what: `NMI RSS with ${total} pods on the cluster (node ${nodes[0]}, ${nmi.pods} pods on it; VmHWM, no V8 flags)`, value: `${fmtMb(nmi.peakKb)} (now ${fmtMb(nmi.rssKb)})`, target: 'printed' });
      notes.push(`NMI (standard mode, cmd/nmi.ts compiled) read after its caches synced: ${nmi.pods} pods of its node, and every AzureIdentity, binding and AAI of the cluster (no --enableScaleFeatures).`);
    }
  } finally {
    await w.stop();
  }
}

/** The VM world of runs 4 and 5 (200 VMs, the identities and pods), and MIC's cold convergence on it. */
async function convergeVms(w: BenchWorld, opts: Options) {
  const nodes = await w.computeAndNodes(Array.from({ length: 200 }, (_, i) => ({ kind: 'vm' as const, name: `vm-${i}`, nodes: 1 })));
  const ids = await w.identities(opts.identities, 'id');
  const pods = await w.pods(opts.pods, nodes, ids, 'p');
  const cold = await w.startMicAndConverge(opts, pods.length);
  return { nodes, ids, pods, cold };
}

/** Run 4 once more, MIC in a memory cgroup limited as the chart limits its container. */
async function cgroupRun(opts: Options, rows: Row[], notes: string[]): Promise<void> {
  const limit = `${opts.micMemoryLimitMib} MiB`;
  const cg = await createMemoryCgroup(`aadpodid-bench-mic-${process.pid}`, opts.micMemoryLimitMib * 1024 * 1024);
  if ('unavailable' in cg) {
    rows.push({ what: `MIC peak RSS with ${opts.rssPods} pods in a ${limit} memory cgroup`, value: `not measured: ${cg.unavailable}`, target: 'printed' });
    return;
  }
  const w = await BenchWorld.start(cg);
  try {
    const { nodes, ids, pods, cold } = await convergeVms(w, opts);
    rows.push({ what: `converge from cold, 200 VMs, ${pods.length} pods, MIC in a ${limit} memory cgroup`, value: `${fmtS(cold.fromStartMs)} (${fmtS(cold.fromReadyMs)} after MIC ready)`, target: '<= 10 s' });
    const more = opts.rssPods - pods.length;
    if (more > 0) await w.pods(more, nodes, ids, 'q');
    await w.waitAssigned(Math.max(opts.rssPods, pods.length), 120_000);
    await w.settle();
    rows.push({ what: `MIC peak RSS with ${Math.max(opts.rssPods, pods.length)} pods in a ${limit} memory cgroup (the chart's limit; no V8 flags)`, value: fmtMb(w.peakRssKb()), target: 'printed' });
    notes.push(`cgroup run: MIC in ${cg.dir} (limit ${limit}, the chart's mic.resources.limits.memory); Node sizes V8's heap from a cgroup's limit at start (V8 heap limit ${await heapLimitMb(cg)} there, ${await heapLimitMb()} unconstrained on this machine): a smaller heap limit makes V8 grow its old generation less before a full collection.`);
  } finally {
    await w.stop();
    await cg.remove();
  }
}

/** V8's heap size limit of a node started here (in the cgroup when given). */
async function heapLimitMb(cg?: MemoryCgroup): Promise<string> {
  const args = ['-e', 'process.stdout.write(String(require("node:v8").getHeapStatistics().heap_size_limit))'];
  const { command, args: argv } = inCgroup(cg, process.execPath, args);
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(command, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    p.stdout.on('data', (d: Buffer) => (text += d.toString()));
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`node -e exited with ${String(code)}`))));
  });
  return fmtMb(Number(out) / 1024);
}

/** The chart's mic.resources.limits.memory in MiB (Mi and Gi suffixes, as the chart writes it). */
async function chartMicMemoryLimitMib(): Promise<number> {
  const values = parseYaml(await readFile(join(ROOT, 'charts/aad-pod-identity/values.yaml'), 'utf8')) as { mic?: { resources?: { limits?: { memory?: string } } } };
  const raw = values.mic?.resources?.limits?.memory ?? '';
  const m = /^(\d+)(Mi|Gi)$/.exec(raw);
  if (m === null) throw new Error(`charts/aad-pod-identity/values.yaml: mic.resources.limits.memory '${raw}' is not NMi or NGi`);
  return Number(m[1]) * (m[2] === 'Gi' ? 1024 : 1);
}

/* ------------------------------------------------------------------------------------------- world */

interface BenchPod {
  readonly name: string;
  readonly node: string;
  readonly selector: string;
}

interface BenchIdentity {
  readonly name: string;
  readonly selector: string;
  readonly resourceId: string;
}

class BenchWorld {
  static #runs = 0;
  readonly #nodeTarget = new Map<string, string>();
  readonly #idBySelector = new Map<string, string>();
  readonly #assignedAt = new Map<string, number>();
  #assignedCount = 0;
  #waiters: Array<() => boolean> = [];
  #mic: ChildProcess | undefined;
  #nmi: ChildProcess | undefined;
  #profileUrl: string | undefined;
  #rssPeakKb = 0;
  #rssTimer: NodeJS.Timeout | undefined;
  #watcher: Reflector | undefined;

  private constructor(
    readonly api: ApiServerHandle,
    readonly azure: AzureEmulator,
    readonly dir: string,
    readonly sp: { clientId: string; secret: string },
    /** When set, MIC runs in this memory cgroup. */
    readonly cgroup?: MemoryCgroup,
  ) {}

  static async start(cgroup?: MemoryCgroup): Promise<BenchWorld> {
    const api = await startApiServer({ crdDir: join(ROOT, 'config/crd'), historyLimit: 100_000, bookmarkIntervalMs: 5000 });
    const azure = await startAzureEmulator();
    const group = azure.createResourceGroup(RG);
    const secret = `secret-${Math.random().toString(36).slice(2)}`;
    const clientId = crypto.randomUUID();
    azure.registerServicePrincipal({ clientId, secret });
    // ARM authorises by role assignments: what the docs tell an admin to grant MIC's principal.
    azure.grantRole(clientId, 'Virtual Machine Contributor', group.id);
    azure.grantRole(clientId, 'Managed Identity Operator', group.id);
    const dir = await mkdtemp(join(tmpdir(), 'bench-mic-'));
    const w = new BenchWorld(api, azure, dir, { clientId, secret }, cgroup);
    await w.#watchAssigned();
    return w;
  }

  async computeAndNodes(targets: ReadonlyArray<{ kind: 'vm' | 'vmss'; name: string; nodes: number }>): Promise<string[]> {
    const nodes: { name: string; providerID: string }[] = [];
    for (const t of targets) {
      const base = `azure:///subscriptions/${this.azure.subscriptionId}/resourceGroups/${RG}/providers/Microsoft.Compute`;
      if (t.kind === 'vm') {
        this.azure.createVm(RG, t.name);
        nodes.push({ name: t.name, providerID: `${base}/virtualMachines/${t.name}` });
        this.#nodeTarget.set(t.name, `vm/${t.name}`);
      } else {
        this.azure.createVmss(RG, t.name, { instances: t.nodes });
        for (let i = 0; i < t.nodes; i++) {
          const name = `${t.name}-${i}`;
          nodes.push({ name, providerID: `${base}/virtualMachineScaleSets/${t.name}/virtualMachines/${i}` });
          this.#nodeTarget.set(name, `vmss/${t.name}`);
        }
      }
    }
    await pool(nodes, 32, (n) => this.#post('/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: n.name }, spec: { providerID: n.providerID } }));
    return nodes.map((n) => n.name);
  }

  async identities(n: number, prefix: string): Promise<BenchIdentity[]> {
    const out: BenchIdentity[] = [];
    for (let i = 0; i < n; i++) {
      const name = `${prefix}-${i}`;
      const msi = this.azure.createUserAssignedIdentity(RG, name);
      out.push({ name, selector: `sel-${name}`, resourceId: msi.id });
      this.#idBySelector.set(`sel-${name}`, msi.id.toLowerCase());
    }
    const crd = (plural: string) => collectionPath(plural, 'default');
    await pool(out, 32, async (id) => {
      const msi = this.azure.getUserAssignedIdentity(id.resourceId)!;
      await this.#post(crd(Plurals.AzureIdentity), {
        apiVersion: 'aadpodidentity.k8s.io/v1', kind: 'AzureIdentity', metadata: { name: id.name },
        spec: { type: 0, resourceID: id.resourceId, clientID: msi.clientId },
      });
      await this.#post(crd(Plurals.AzureIdentityBinding), {
        apiVersion: 'aadpodidentity.k8s.io/v1', kind: 'AzureIdentityBinding', metadata: { name: `${id.name}-binding` },
        spec: { azureIdentity: id.name, selector: id.selector },
      });
    });
    return out;
  }

  /** `n` pods: pod i uses identity i % identities and node (i * 7919) % nodes (every identity on many nodes). */
  async pods(n: number, nodes: readonly string[], ids: readonly BenchIdentity[], prefix: string): Promise<BenchPod[]> {
    const pods = Array.from({ length: n }, (_, i) => ({ name: `${prefix}-${i}`, node: nodes[(i * 7919) % nodes.length]!, selector: ids[i % ids.length]!.selector }));
    await pool(pods, 64, (p) => this.#createPod(p));
    return pods;
  }

  async startMicAndConverge(opts: Options, expected: number): Promise<{ fromStartMs: number; fromReadyMs: number; peakRssKb: number; kubeWrites: number; writeDetail: string; emulatorCpu: number; micCpuMs: number; load: number }> {
    const before = this.api.requestLog().length;
    const started = Date.now();
    const cpu = process.cpuUsage();
    const load = loadavg()[0]!;
    const ready = await this.#spawnMic(opts);
    await this.waitAssigned(expected, 300_000);
    const done = Date.now();
    const used = process.cpuUsage(cpu);
    const micCpuMs = await this.micCpuMs();
    const emulatorCpu = (used.user + used.system) / 1000 / (done - started);
    await this.settle();
    const writes = this.api.requestLog().slice(before).filter((r) => r.method !== 'GET');
    const kind = (r: { method: string; path: string }) =>
      r.path.includes('/events') ? 'events' : r.path.includes('/leases') ? 'leases' : r.path.endsWith('/status') ? 'AAI status' : `AAI ${r.method}`;
    const counts = new Map<string, number>();
    for (const r of writes) counts.set(kind(r), (counts.get(kind(r)) ?? 0) + 1);
    return {
      fromStartMs: done - started,
      fromReadyMs: done - ready,
      peakRssKb: this.peakRssKb(),
      kubeWrites: writes.length,
      writeDetail: [...counts].map(([k, v]) => `${k} ${v}`).join(', '),
      emulatorCpu,
      micCpuMs,
      load,
    };
  }

  /** Creates pods `gapMs` apart and returns, per pod, ms from its POST to its AAI Assigned. */
  async latency(pods: readonly BenchPod[], gapMs: number): Promise<number[]> {
    const t0 = new Map<string, number>();
    const target = this.#assignedCount + pods.length;
    for (const p of pods) {
      t0.set(`default/${p.name}`, performance.now());
      void this.#createPod(p);
      await sleep(gapMs);
    }
    await this.waitAssigned(target, 60_000);
    return pods.map((p) => this.#assignedAt.get(`default/${p.name}`)! - t0.get(`default/${p.name}`)!);
  }

  waitAssigned(count: number, timeoutMs: number): Promise<void> {
    if (this.#assignedCount >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${this.#assignedCount}/${count} AAIs Assigned after ${timeoutMs} ms`)), timeoutMs);
      const check = () => {
        if (this.#assignedCount < count) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      this.#waiters.push(check);
    });
  }

  /** Lets in-flight work finish (a quiet second). */
  async settle(): Promise<void> {
    await sleep(1000);
  }

  patchCount(): number {
    return this.azure.requestLog().filter((r) => r.operation === 'vm_patch' || r.operation === 'vmss_patch').length;
  }

  /** Σ over targets of ceil(distinct identities its pods need / 150). */
  minimumPatches(pods: readonly BenchPod[]): number {
    const perTarget = new Map<string, Set<string>>();
    for (const p of pods) {
      const t = this.#nodeTarget.get(p.node)!;
      let s = perTarget.get(t);
      if (s === undefined) perTarget.set(t, (s = new Set()));
      s.add(this.#idBySelector.get(p.selector)!);
    }
    let n = 0;
    for (const s of perTarget.values()) n += Math.ceil(s.size / PER_PATCH);
    return n;
  }

  /** Diagnostics: makes MIC (started with --heapsnapshot-signal=SIGUSR2) write a heap snapshot into the repo root. */
  async heapSnapshot(): Promise<void> {
    this.#mic?.kill('SIGUSR2');
    await sleep(15_000);
  }

  /** CPU time (user + system) the MIC process has used so far. */
  async micCpuMs(): Promise<number> {
    const pid = this.#mic?.pid;
    if (pid === undefined) return 0;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // clock ticks at USER_HZ 100
  }

  peakRssKb(): number {
    return this.#rssPeakKb;
  }

  /**
   * MIC's live heap: the sum of the self sizes of every node of a V8 heap snapshot, taken through MIC's
   * --enableProfile endpoint (V8 runs a full garbage collection before it writes a snapshot).
   */
  async micLiveHeapBytes(): Promise<number> {
    if (this.#profileUrl === undefined) throw new Error('MIC did not log its profiling endpoint');
    const res = await fetch(`${this.#profileUrl}/debug/pprof/heap`);
    if (res.status !== 200) throw new Error(`heap snapshot: HTTP ${res.status}`);
    const text = await res.text();
    // Diagnostics: keep the snapshot for a look in DevTools (or a script) when asked.
    const keep = process.env['BENCH_MIC_HEAPSNAP_FILE'];
    if (keep) await writeFile(keep, text);
    const snap = JSON.parse(text) as { snapshot: { meta: { node_fields: string[] } }; nodes: number[] };
    const stride = snap.snapshot.meta.node_fields.length;
    const at = snap.snapshot.meta.node_fields.indexOf('self_size');
    let sum = 0;
    for (let i = at; i < snap.nodes.length; i += stride) sum += snap.nodes[i]!;
    return sum;
  }

  /** Starts one NMI for `node` against this API server; returns its RSS once its caches synced (and a quiet second). */
  async nmiRss(opts: Options, node: string): Promise<{ peakKb: number; rssKb: number; pods: number }> {
    const kubeconfig = join(this.dir, 'kubeconfig');
    const entry = join(dirname((await micEntry({ ...opts, tsx: false }))[0]!), 'nmi.js');
    const proc = spawn(process.execPath, [
      entry, `--node=${node}`, `--kubeconfig=${kubeconfig}`, '--nmi-port=0', '--http-probe-port=0', '--prometheus-port=0',
      '--probe-bind-address=127.0.0.1', '--metrics-bind-address=127.0.0.1', '--manage-iptables=false',
      '--imds-endpoint=http://127.0.0.1:9', '--kubelet-config=/nonexistent', '--cni-conf-dir=', '--prefetch=false', '--log-format=json',
    ], { cwd: ROOT, env: { ...process.env, NODE_EXTRA_CA_CERTS: this.azure.caFile }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#nmi = proc;
    const log = createWriteStream(join(tmpdir(), `bench-mic-nmi-${process.pid}.log`));
    proc.stderr?.pipe(log);
    const pods = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('NMI caches did not sync within 120 s')), 120_000);
      proc.once('exit', (code) => reject(new Error(`NMI exited with ${String(code)}`)));
      const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
      lines.on('line', (line) => {
        log.write(`${line}\n`);
        if (!line.includes('"caches synced"')) return;
        clearTimeout(timer);
        resolve((JSON.parse(line) as { pods?: number }).pods ?? -1);
      });
    });
    await this.settle();
    const status = await readFile(`/proc/${proc.pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    return { peakKb: kb('VmHWM'), rssKb: kb('VmRSS'), pods };
  }

  async stop(): Promise<void> {
    if (this.#rssTimer) clearInterval(this.#rssTimer);
    const mic = this.#mic;
    if (mic && mic.exitCode === null) {
      const exited = new Promise((r) => mic.once('exit', r));
      mic.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
      if (mic.exitCode === null) mic.kill('SIGKILL');
    }
    const nmi = this.#nmi;
    if (nmi && nmi.exitCode === null) {
      const exited = new Promise((r) => nmi.once('exit', r));
      nmi.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
      if (nmi.exitCode === null) nmi.kill('SIGKILL');
    }
    await this.#watcher?.stop();
    await Promise.allSettled([this.api.stop(), this.azure.stop()]);
    await rm(this.dir, { recursive: true, force: true });
  }

  async #spawnMic(opts: Options): Promise<number> {
    const kubeconfig = join(this.dir, 'kubeconfig');
    const azureJson = join(this.dir, 'azure.json');
    await this.api.writeKubeconfig(kubeconfig);
    await writeFile(azureJson, JSON.stringify({
      cloud: 'AzurePublicCloud', tenantId: this.azure.tenantId, aadClientId: this.sp.clientId, aadClientSecret: this.sp.secret,
      subscriptionId: this.azure.subscriptionId, resourceGroup: RG,
    }));
    const args = [
      ...`${opts.nodeArgs} ${process.env['BENCH_MIC_NODE_ARGS'] ?? ''}`.split(' ').filter((a) => a !== ''),
      ...(await micEntry(opts)),
      `--kubeconfig=${kubeconfig}`, `--cloudconfig=${azureJson}`, `--arm-endpoint=${this.azure.url}`,
      '--http-probe-port=0', '--prometheus-port=0', '--probe-bind-address=127.0.0.1', '--metrics-bind-address=127.0.0.1',
      `--clientQps=${opts.qps}`, `--clientBurst=${opts.qps}`, `--arm-poll-interval=${opts.pollMs}ms`, '--log-format=json',
      // Bound to 127.0.0.1 on a free port; used once, after convergence, for the live-heap figure.
      '--enableProfile', '--profile-port=0',
    ];
    // Kept after the run for a look at what MIC did.
    const logPath = join(tmpdir(), `bench-mic-${process.pid}-${BenchWorld.#runs++}.log`);
    const log = createWriteStream(logPath);
    const { command, args: argv } = inCgroup(this.cgroup, process.execPath, args);
    const proc = spawn(command, argv, {
      cwd: ROOT,
      env: {
        ...process.env,
        MIC_POD_NAMESPACE: 'default',
        HOSTNAME: 'mic-bench',
        AZURE_AUTHORITY_HOST: this.azure.url,
        NODE_EXTRA_CA_CERTS: this.azure.caFile,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#mic = proc;
    proc.stderr?.pipe(log);
    this.#rssTimer = setInterval(() => void this.#sampleRss(), 100);
    return new Promise((resolve, reject) => {
      let buf = '';
      let ready = false;
      proc.stdout?.on('data', (d: Buffer) => {
        log.write(d);
        if (ready) return;
        buf += d.toString();
        const profile = /"url":"(http:\/\/127\.0\.0\.1:\d+)"[^\n]*profiling endpoint listening/.exec(buf);
        if (profile) this.#profileUrl = profile[1];
        if (buf.includes('"ready":true')) {
          ready = true;
          buf = '';
          resolve(Date.now());
        }
      });
      proc.once('exit', (code) => {
        if (!ready) reject(new Error(`MIC exited with ${String(code)}; see ${logPath}`));
      });
    });
  }

  async #sampleRss(): Promise<void> {
    const pid = this.#mic?.pid;
    if (pid === undefined) return;
    try {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      const hwm = /VmHWM:\s+(\d+)/.exec(status);
      if (hwm) this.#rssPeakKb = Math.max(this.#rssPeakKb, Number(hwm[1]));
    } catch {
      // The process is gone.
    }
  }

  async #watchAssigned(): Promise<void> {
    const kc = new KubeConfig();
    kc.loadFromString(this.api.kubeconfigYaml);
    const seen = (obj: KubeObject) => {
      const n = normalizeAssignedIdentity(obj).value;
      if (n === null || n.state !== 'Assigned') return;
      const key = `${n.podNamespace}/${n.pod}`;
      if (this.#assignedAt.has(key)) return;
      this.#assignedAt.set(key, performance.now());
      this.#assignedCount++;
      this.#waiters = this.#waiters.filter((done) => !done());
    };
    this.#watcher = new Reflector({
      kubeConfig: kc,
      path: collectionPath(Plurals.AzureAssignedIdentity),
      name: 'bench-aai',
      handlers: { onAdd: seen, onUpdate: (_o, n) => seen(n) },
    });
    this.#watcher.start();
    await this.#watcher.synced();
  }

  #createPod(p: BenchPod): Promise<void> {
    return this.#post('/api/v1/namespaces/default/pods', {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: p.name, labels: { aadpodidbinding: p.selector } },
      spec: { nodeName: p.node, containers: [{ name: 'app', image: 'busybox' }] },
    });
  }

  async #post(path: string, body: unknown): Promise<void> {
    const res = await fetch(`${this.api.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sandbox-token' },
      body: JSON.stringify(body),
    });
    if (res.status >= 300) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`);
    await res.arrayBuffer();
  }
}

/* ------------------------------------------------------------------------------------------- helpers */

let compiled: Promise<string> | undefined;

/** MIC as the image runs it (compiled JavaScript, no tsx), unless --tsx. Built once into tmp/ (git-ignored). */
async function micEntry(opts: Options): Promise<string[]> {
  if (opts.tsx) return ['--import', 'tsx', join(ROOT, 'cmd/mic.ts')];
  compiled ??= (async () => {
    const out = join(ROOT, 'tmp', 'bench-mic-build');
    await new Promise<void>((resolve, reject) => {
      const tsc = spawn(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.json'), '--outDir', out, '--sourceMap', 'false'], { stdio: 'inherit' });
      tsc.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tsc exited with ${String(code)}`))));
    });
    return join(out, 'cmd', 'mic.js');
  })();
  return [await compiled];
}

async function pool<T>(items: readonly T[], size: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(size, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function shuffle<T>(a: T[]): void {
  // Deterministic (LCG) so runs are comparable.
  let seed = 42;
  for (let i = a.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
}

function pct(values: readonly number[]): string {
  if (values.length === 0) return 'n/a';
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return `p50 ${Math.round(at(0.5))} ms, p99 ${Math.round(at(0.99))} ms (n=${s.length})`;
}

function pctOf(fraction: number): string {
  return `${Math.round(fraction * 100)} %`;
}

function fmtS(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function fmtMb(kb: number): string {
  return `${Math.round(kb / 1024)} MB`;
}

function print(opts: Options, rows: readonly Row[], notes: readonly string[]): void {
  const w1 = Math.max(...rows.map((r) => r.what.length), 6);
  const w2 = Math.max(...rows.map((r) => r.value.length), 6);
  const line = (a: string, b: string, c: string) => `| ${a.padEnd(w1)} | ${b.padEnd(w2)} | ${c} |`;
  const out = [
    '',
    `MIC benchmark (MIC in a child process: cmd/mic.ts ${opts.tsx ? 'under tsx' : 'compiled to JavaScript, as in the image'}; emulators in this process; --clientQps=${opts.qps} --clientBurst=${opts.qps}; ARM LRO poll ${opts.pollMs} ms; MIC node flags: ${opts.nodeArgs || 'none'}; NMI node flags: none)`,
    '',
    line('measure', 'result', 'target'),
    line('-'.repeat(w1), '-'.repeat(w2), '------'),
    ...rows.map((r) => line(r.what, r.value, r.target)),
    '',
    ...notes.map((n) => `- ${n}`),
    '',
  ];
  process.stdout.write(out.join('\n'));
}
