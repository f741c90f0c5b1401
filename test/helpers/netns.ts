// Network namespaces for tests: a node namespace and pod namespaces joined by veths, with no route out, so traffic
// that no rule catches fails closed. Everything made here is removed by `destroy()`, pass or fail.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';

export interface NetnsSupport {
  readonly ok: boolean;
  readonly reason: string;
}

/** Root, `ip` and `iptables` are needed; the reason says what is missing. */
export function netnsSupport(): NetnsSupport {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not running as root' };
  for (const bin of ['/usr/sbin/ip', '/usr/sbin/iptables']) {
    if (!existsSync(bin) && !existsSync(bin.replace('/usr/sbin', '/sbin'))) return { ok: false, reason: `${bin} is missing` };
  }
  return { ok: true, reason: '' };
}

/** Skip for a newcomer without root, with a visible message; never skip when CI is set (the test then fails). */
export function shouldSkipNetns(suite: string): boolean {
  const support = netnsSupport();
  if (support.ok) return false;
  if (process.env.CI) return false;
  console.warn(`[skipped] ${suite}: needs root with ip and iptables (${support.reason}); CI runs it`);
  return true;
}

export function sh(argv: readonly string[], timeoutMs = 15_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const [file, ...args] = argv;
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? Number((error as { code?: unknown }).code) : 1;
      resolve({ code, stdout, stderr: error !== null && stderr === '' ? error.message : stderr });
    });
  });
}

async function must(argv: readonly string[]): Promise<string> {
  const result = await sh(argv);
  if (result.code !== 0) throw new Error(`${argv.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
  return result.stdout;
}

let counter = 0;

export interface PodNetns {
  readonly ns: string;
  readonly ip: string;
}

export interface NodeNetwork {
  readonly nodeNs: string;
  /** The node's address on the pod subnet. */
  readonly nodeIp: string;
  addPod(): Promise<PodNetns>;
  /** Runs a process inside a namespace; it is killed by destroy(). */
  spawnIn(ns: string, argv: readonly string[]): ChildProcess;
  exec(ns: string, argv: readonly string[], timeoutMs?: number): Promise<{ code: number; stdout: string; stderr: string }>;
  destroy(): Promise<void>;
}

/** A node namespace (lo up, route_localnet on, no default route) to which pods are attached by veth pairs. */
export async function createNodeNetwork(): Promise<NodeNetwork> {
  const id = `${process.pid % 10000}x${++counter}`;
  const nodeNs = `aadt-${id}-node`;
  const subnet = `10.${200 + (counter % 50)}.${process.pid % 250}`;
  const nodeIp = `${subnet}.1`;
  const namespaces: string[] = [nodeNs];
  const children: ChildProcess[] = [];
  let pods = 0;

  await must(['ip', 'netns', 'add', nodeNs]);
  try {
    await must(['ip', 'netns', 'exec', nodeNs, 'ip', 'link', 'set', 'lo', 'up']);
    // DNAT to 127.0.0.1 from a non-loopback interface needs route_localnet, as kube-proxy sets on real nodes.
    await must(['ip', 'netns', 'exec', nodeNs, 'sysctl', '-qw', 'net.ipv4.conf.all.route_localnet=1']);
    await must(['ip', 'netns', 'exec', nodeNs, 'ip', 'link', 'add', 'br0', 'type', 'bridge']);
    await must(['ip', 'netns', 'exec', nodeNs, 'ip', 'addr', 'add', `${nodeIp}/24`, 'dev', 'br0']);
    await must(['ip', 'netns', 'exec', nodeNs, 'ip', 'link', 'set', 'br0', 'up']);
    await must(['ip', 'netns', 'exec', nodeNs, 'sysctl', '-qw', 'net.ipv4.conf.br0.route_localnet=1']);
  } catch (error) {
    await sh(['ip', 'netns', 'del', nodeNs]);
    throw error;
  }

  const network: NodeNetwork = {
    nodeNs,
    nodeIp,
    async addPod() {
      const n = ++pods;
      const ns = `aadt-${id}-p${n}`;
      const ip = `${subnet}.${10 + n}`;
      const hostSide = `vh${id}p${n}`.slice(0, 15);
      await must(['ip', 'netns', 'add', ns]);
      namespaces.push(ns);
      await must(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
      await must(['ip', 'netns', 'exec', ns, 'ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostSide]);
      await must(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', hostSide, 'netns', nodeNs]);
      await must(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await must(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'eth0', 'up']);
      await must(['ip', 'netns', 'exec', ns, 'ip', 'route', 'add', 'default', 'via', nodeIp]);
      await must(['ip', 'netns', 'exec', nodeNs, 'ip', 'link', 'set', hostSide, 'master', 'br0']);
      await must(['ip', 'netns', 'exec', nodeNs, 'ip', 'link', 'set', hostSide, 'up']);
      return { ns, ip };
    },
    spawnIn(ns, argv) {
      const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      return child;
    },
    exec(ns, argv, timeoutMs) {
      return sh(['ip', 'netns', 'exec', ns, ...argv], timeoutMs);
    },
    async destroy() {
      for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
      await Promise.all(
        children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))),
      );
      // Deleting a namespace removes its veths and its iptables rules with it.
      for (const ns of namespaces.reverse()) await sh(['ip', 'netns', 'del', ns]);
    },
  };
  return network;
}

/** Namespaces this process's tests created that still exist (should be none after destroy). */
export async function leftoverNamespaces(): Promise<string[]> {
  const out = (await sh(['ip', 'netns', 'list'])).stdout;
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`aadt-${process.pid % 10000}x`));
}
