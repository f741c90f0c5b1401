// Loopback mode (no root): a pod IP is an address in 127.0.1.0/24 and the pod's process binds its sockets to it, so
// NMI (on its own port, no iptables) still tells pods apart by source address.
//
// A pod process cannot be asked to bind: the Azure SDKs have no localAddress option. So the process is started with
// a tiny preload (`--import data:...`, in NODE_OPTIONS) that sets `localAddress` on every TCP connect to a 127.x
// address. The preload's source carries the IP as a literal: nothing is read from the environment, and the program
// itself runs unmodified.

import type { NodeAttachment, PodAttachment, PodNetwork } from './types.js';

export function createLoopbackNetwork(): PodNetwork {
  return new LoopbackNetwork();
}

/** `node` options that make every loopback connection of the process leave from `ip`. */
export function bindPodIpNodeOptions(ip: string): string {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(ip)) throw new Error(`not a loopback IPv4 address: ${ip}`);
  const source = [
    "import net from 'node:net';",
    `const podIp = '${ip}';`,
    'const connect = net.Socket.prototype.connect;',
    'net.Socket.prototype.connect = function (...args) {',
    // net.createConnection passes its normalised [options, callback] array as the first argument.
    '  const options = Array.isArray(args[0]) ? args[0][0] : args[0];',
    "  if (options && typeof options === 'object' && !options.path && !options.localAddress && /^127\\./.test(String(options.host ?? ''))) {",
    '    options.localAddress = podIp;',
    '  }',
    '  return connect.apply(this, args);',
    '};',
  ].join('\n');
  return `--import=data:text/javascript,${encodeURIComponent(source)}`;
}

class LoopbackNetwork implements PodNetwork {
  readonly mode = 'loopback' as const;
  readonly serviceAddress = '127.0.0.1';
  readonly name = 'loopback';
  readonly #nodes = new Set<string>();
  readonly #pods = new Map<string, PodAttachment & { readonly host: number }>();
  readonly #free: number[] = Array.from({ length: 253 * 10 }, (_, i) => i);

  async addNode(node: string): Promise<NodeAttachment> {
    this.#nodes.add(node);
    return { node, serviceAddress: this.serviceAddress, commandPrefix: [] };
  }

  async addPod(node: string, key: string): Promise<PodAttachment> {
    const existing = this.#pods.get(key);
    if (existing) return existing;
    if (!this.#nodes.has(node)) throw new Error(`node ${node} is not part of this sandbox`);
    const host = this.#free.shift();
    if (host === undefined) throw new Error('no free loopback pod address');
    // 127.0.1.2 .. 127.0.10.254: never 127.0.0.x, where the servers listen.
    const ip = `127.0.${1 + Math.floor(host / 253)}.${2 + (host % 253)}`;
    const pod = { key, node, ip, host, commandPrefix: [], env: { NODE_OPTIONS: bindPodIpNodeOptions(ip) } };
    this.#pods.set(key, pod);
    return pod;
  }

  node(node: string): NodeAttachment | undefined {
    return this.#nodes.has(node) ? { node, serviceAddress: this.serviceAddress, commandPrefix: [] } : undefined;
  }

  async removePod(key: string): Promise<void> {
    const pod = this.#pods.get(key);
    if (!pod) return;
    this.#pods.delete(key);
    this.#free.push(pod.host);
  }

  pod(key: string): PodAttachment | undefined {
    return this.#pods.get(key);
  }

  ownedNamespaces(): string[] {
    return [];
  }

  async destroy(): Promise<void> {
    this.#pods.clear();
  }
}
