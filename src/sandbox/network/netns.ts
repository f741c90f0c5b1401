// Netns mode: every node is a network namespace with a bridge for its pods and no route out; every pod is a
// namespace with a veth on its node's bridge. The root namespace is linked to each node by a private /30, and the
// emulators listen on one "service" address in the root namespace that only the node namespaces have a route to.
//
// Address plan for sandbox S (0-255):
//   service address   10.251.S.1/32 on a veth pair that lives in the root namespace (aads<S>s / aads<S>sp)
//   node i uplink     root 10.250.S.(4i+1)/30 (aads<S>n<i>)  <->  node 10.250.S.(4i+2)/30 (host0)
//   node i pods       10.244.i.0/24 on bridge cbr0, the node is .1 (isolated per namespace, so no clash between sandboxes)
// Traffic from a pod to 169.254.169.254 reaches the node, which does not forward: without NMI's DNAT it fails.

import { must, run, ipBatch } from './exec.js';
import type { NodeAttachment, PodAttachment, PodNetwork } from './types.js';
import { realClock } from '../../common/clock.js';

const MAX_SANDBOXES = 256;
const MAX_NODES = 63;

export interface NetnsNetworkOptions {
  /** Name prefix of everything created (namespaces, links); the sandbox id is appended. */
  readonly prefix?: string;
}

/** Creates the service link under the first free sandbox id; everything else is made on demand. */
export async function createNetnsNetwork(opts: NetnsNetworkOptions = {}): Promise<PodNetwork> {
  const prefix = opts.prefix ?? 'aads';
  const start = Math.floor(Math.random() * MAX_SANDBOXES);
  for (let k = 0; k < MAX_SANDBOXES; k++) {
    const id = (start + k) % MAX_SANDBOXES;
    const link = `${prefix}${id}s`;
    // Creating the link is the lock: a concurrent sandbox that picked the same id fails here and tries the next.
    const made = await run(['ip', 'link', 'add', link, 'type', 'veth', 'peer', 'name', `${prefix}${id}sp`]);
    if (made.code !== 0) continue;
    const net = new NetnsNetwork(prefix, id);
    try {
      await ipBatch([`addr add ${net.serviceAddress}/32 dev ${link}`, `link set ${link} up`, `link set ${prefix}${id}sp up`]);
    } catch (error) {
      await net.destroy();
      throw error;
    }
    return net;
  }
  throw new Error(`no free sandbox id: ${MAX_SANDBOXES} links named ${prefix}<n>s exist`);
}

/** True when this process can build network namespaces: root, and `ip` and `iptables` on the PATH. */
export async function netnsAvailable(): Promise<{ ok: boolean; reason: string }> {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not running as root' };
  for (const tool of ['ip', 'iptables']) {
    const r = await run(['sh', '-c', `command -v ${tool}`]);
    if (r.code !== 0) return { ok: false, reason: `${tool} is not installed` };
  }
  return { ok: true, reason: '' };
}

interface NodeRecord {
  readonly attachment: NodeAttachment;
  readonly index: number;
  readonly netns: string;
  readonly nodeIp: string;
  readonly freeHosts: number[];
}

interface PodRecord {
  readonly node: string;
  readonly netns: string;
  readonly ip: string;
  readonly host: number;
}

class NetnsNetwork implements PodNetwork {
  readonly mode = 'netns' as const;
  readonly serviceAddress: string;
  readonly #prefix: string;
  readonly #id: number;
  readonly #nodes = new Map<string, NodeRecord>();
  readonly #pods = new Map<string, PodRecord>();
  #podCounter = 0;

  constructor(prefix: string, id: number) {
    this.#prefix = prefix;
    this.#id = id;
    this.serviceAddress = `10.251.${id}.1`;
  }

  get name(): string {
    return `${this.#prefix}${this.#id}`;
  }

  async addNode(node: string): Promise<NodeAttachment> {
    const index = this.#nodes.size;
    if (index >= MAX_NODES) throw new Error(`at most ${MAX_NODES} nodes in netns mode`);
    const netns = `${this.name}-${sanitize(node)}`;
    const uplink = `${this.name}n${index}`;
    const rootIp = `10.250.${this.#id}.${4 * index + 1}`;
    const nodeUplinkIp = `10.250.${this.#id}.${4 * index + 2}`;
    const nodeIp = `10.244.${index}.1`;
    await must(['ip', 'netns', 'add', netns]);
    const attachment: NodeAttachment = { node, netns, nodeIp, hostAddress: nodeUplinkIp, serviceAddress: this.serviceAddress, commandPrefix: ['ip', 'netns', 'exec', netns] };
    this.#nodes.set(node, { attachment, index, netns, nodeIp, freeHosts: range(2, 254) });
    await ipBatch([`link add ${uplink} type veth peer name host0 netns ${netns}`, `addr add ${rootIp}/30 dev ${uplink}`, `link set ${uplink} up`]);
    await ipBatch(
      [
        'link set lo up',
        `addr add ${nodeUplinkIp}/30 dev host0`,
        'link set host0 up',
        // The only route out of the node: to the emulators, nothing else (no default route).
        `route add ${this.serviceAddress}/32 via ${rootIp}`,
        'link add cbr0 type bridge',
        `addr add ${nodeIp}/24 dev cbr0`,
        'link set cbr0 up',
      ],
      netns,
    );
    // NMI's DNAT to 127.0.0.1 for traffic from the bridge needs route_localnet, as kube-proxy sets on real nodes.
    await must(['ip', 'netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv4.conf.all.route_localnet=1', 'net.ipv4.conf.cbr0.route_localnet=1']);
    return attachment;
  }

  node(node: string): NodeAttachment | undefined {
    return this.#nodes.get(node)?.attachment;
  }

  async addPod(node: string, key: string): Promise<PodAttachment> {
    const existing = this.#pods.get(key);
    if (existing) return this.#attachment(key, existing);
    const n = this.#nodes.get(node);
    if (!n) throw new Error(`node ${node} is not part of this sandbox`);
    const host = n.freeHosts.shift();
    if (host === undefined) throw new Error(`node ${node} has no free pod address`);
    const p = ++this.#podCounter;
    const netns = `${this.name}-p${p}`;
    const hostSide = `${this.name}p${p}`;
    const ip = `10.244.${n.index}.${host}`;
    const record: PodRecord = { node, netns, ip, host };
    this.#pods.set(key, record);
    try {
      await must(['ip', 'netns', 'add', netns]);
      await must(['ip', 'link', 'add', 'eth0', 'netns', netns, 'type', 'veth', 'peer', 'name', hostSide, 'netns', n.netns]);
      await ipBatch(['link set lo up', `addr add ${ip}/24 dev eth0`, 'link set eth0 up', `route add default via ${n.nodeIp}`], netns);
      await ipBatch([`link set ${hostSide} master cbr0`, `link set ${hostSide} up`], n.netns);
    } catch (error) {
      await this.removePod(key);
      throw error;
    }
    return this.#attachment(key, record);
  }

  async removePod(key: string): Promise<void> {
    const record = this.#pods.get(key);
    if (!record) return;
    this.#pods.delete(key);
    await killNamespaceProcesses(record.netns);
    // Deleting the namespace deletes its veth, and with it the peer on the node's bridge.
    await run(['ip', 'netns', 'del', record.netns]);
    this.#nodes.get(record.node)?.freeHosts.push(record.host);
  }

  pod(key: string): PodAttachment | undefined {
    const record = this.#pods.get(key);
    return record ? this.#attachment(key, record) : undefined;
  }

  async destroy(): Promise<void> {
    for (const key of [...this.#pods.keys()]) await this.removePod(key);
    for (const n of this.#nodes.values()) {
      await killNamespaceProcesses(n.netns);
      await run(['ip', 'netns', 'del', n.netns]);
      // The namespace (and the uplink's peer) lingers until its last process is reaped; delete the root end now.
      await run(['ip', 'link', 'del', `${this.name}n${n.index}`]);
    }
    this.#nodes.clear();
    await run(['ip', 'link', 'del', `${this.name}s`]);
  }

  /** Everything this sandbox made that the host can list (for tests checking nothing is left behind). */
  ownedNamespaces(): string[] {
    return [...[...this.#nodes.values()].map((n) => n.netns), ...[...this.#pods.values()].map((p) => p.netns)];
  }

  #attachment(key: string, r: PodRecord): PodAttachment {
    return { key, node: r.node, ip: r.ip, netns: r.netns, commandPrefix: ['ip', 'netns', 'exec', r.netns], env: {} };
  }
}

/** Kills whatever still runs in a namespace (a pod's processes when the pod is deleted), so `ip netns del` frees it. */
async function killNamespaceProcesses(netns: string): Promise<void> {
  const pids = (await run(['ip', 'netns', 'pids', netns])).stdout.split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  // SIGKILL is asynchronous: wait (briefly) until they are gone, so the namespace really goes with `ip netns del`.
  for (let i = 0; i < 40 && pids.some(alive); i++) await realClock.sleep(50);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function sanitize(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 40);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
