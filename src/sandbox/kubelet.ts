// The sandbox's kubelet (and scheduler): registers the nodes, binds unscheduled pods to them round-robin, gives each
// pod on its nodes an address from the pod network (a network namespace, or a 127.0.1.x address), reports it as
// Running with status.podIP through the status subresource, and tears the pod's network down when the pod goes.
//
// Written from the protocol (list + watch over HTTP), like the emulators: it shares no code with the product's
// Kubernetes layer, so a misunderstanding there is not mirrored here.

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { arch, release } from 'node:os';
import type { Logger } from 'pino';
import { Agent, fetch, type Dispatcher } from 'undici';
import type { PodAttachment, PodNetwork } from './network/types.js';
import { realClock } from '../common/clock.js';

export interface KubeletNode {
  readonly name: string;
  readonly providerID: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface KubeletOptions {
  readonly apiUrl: string;
  readonly token: string;
  /** CA of the API server when it speaks HTTPS. */
  readonly caPem?: string;
  readonly nodes: readonly KubeletNode[];
  readonly network: PodNetwork;
  readonly log: Logger;
  /** Pods set up at once (namespaces and veths); default 8. */
  readonly concurrency?: number;
  /** Called after a pod is Running with its address, and after it is torn down. */
  readonly onPodStarted?: (pod: PodAttachment) => void;
  readonly onPodRemoved?: (key: string) => void;
}

export interface Kubelet {
  /** Registers the nodes and starts watching pods; resolves once the first list is handled. */
  start(): Promise<void>;
  /** The running pods' attachments, keyed `<namespace>/<name>`. */
  pods(): ReadonlyMap<string, PodAttachment>;
  /** Resolves with the pod's attachment once it is Running (rejects after timeoutMs). */
  waitForPod(key: string, timeoutMs?: number): Promise<PodAttachment>;
  /** Stops watching and removes every pod network it made (processes killed). */
  stop(): Promise<void>;
}

export function createKubelet(opts: KubeletOptions): Kubelet {
  return new SandboxKubelet(opts);
}

interface PodObject {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly nodeName: string;
  readonly deleting: boolean;
  readonly podIP: string;
  readonly hostNetwork: boolean;
  /** spec.containers' names and images, for containerStatuses (kubectl's READY column). */
  readonly containers: readonly { readonly name: string; readonly image: string }[];
}

interface Running {
  readonly uid: string;
  readonly attachment: PodAttachment;
}

class SandboxKubelet implements Kubelet {
  readonly #opts: KubeletOptions;
  readonly #log: Logger;
  readonly #dispatcher: Dispatcher;
  readonly #nodeNames: Set<string>;
  readonly #running = new Map<string, Running>();
  readonly #byUid = new Map<string, string>();
  readonly #chains = new Map<string, Promise<void>>();
  readonly #waiters = new Map<string, Array<(a: PodAttachment) => void>>();
  readonly #abort = new AbortController();
  #slots: number;
  readonly #queued: Array<() => void> = [];
  #nextNode = 0;
  #resourceVersion = '';
  #watchLoop: Promise<void> | undefined;
  #stopped = false;
  readonly #bootID = randomUUID();

  constructor(opts: KubeletOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'kubelet' });
    this.#dispatcher = new Agent({ connect: opts.caPem ? { ca: opts.caPem } : {}, keepAliveTimeout: 30_000 });
    this.#nodeNames = new Set(opts.nodes.map((n) => n.name));
    this.#slots = opts.concurrency ?? 8;
  }

  async start(): Promise<void> {
    for (const node of this.#opts.nodes) await this.#registerNode(node);
    await this.#relist();
    this.#watchLoop = this.#watchForever();
  }

  pods(): ReadonlyMap<string, PodAttachment> {
    return new Map([...this.#running].map(([k, r]) => [k, r.attachment]));
  }

  waitForPod(key: string, timeoutMs = 30_000): Promise<PodAttachment> {
    const running = this.#running.get(key);
    if (running) return Promise.resolve(running.attachment);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`pod ${key} was not Running within ${timeoutMs} ms`)), timeoutMs);
      const list = this.#waiters.get(key) ?? [];
      list.push((a) => {
        clearTimeout(timer);
        resolve(a);
      });
      this.#waiters.set(key, list);
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    await this.#watchLoop?.catch(() => undefined);
    await Promise.allSettled([...this.#chains.values()]);
    for (const key of [...this.#running.keys()]) await this.#opts.network.removePod(key);
    this.#running.clear();
    await this.#dispatcher.close().catch(() => undefined);
  }

  /* ----------------------------------------------------------------------------------------- nodes */

  async #registerNode(node: KubeletNode): Promise<void> {
    const attachment = await this.#opts.network.addNode(node.name);
    const labels = {
      'kubernetes.io/hostname': node.name,
      'kubernetes.io/os': 'linux',
      'kubernetes.io/arch': goArch(),
      'kubernetes.io/role': 'agent',
      ...(node.labels ?? {}),
    };
    const body = { apiVersion: 'v1', kind: 'Node', metadata: { name: node.name, labels }, spec: { providerID: node.providerID } };
    const created = await this.#request('POST', '/api/v1/nodes', body);
    if (created.status !== 201 && created.status !== 409) throw new Error(`registering node ${node.name}: HTTP ${created.status} ${created.text}`);
    const now = new Date(realClock.now()).toISOString();
    const status = {
      status: {
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'sandbox kubelet is posting ready status', lastHeartbeatTime: now, lastTransitionTime: now }],
        addresses: [
          { type: 'InternalIP', address: attachment.nodeIp ?? '127.0.0.1' },
          { type: 'Hostname', address: node.name },
        ],
        nodeInfo: nodeSystemInfo(node.name, this.#bootID),
      },
    };
    const patched = await this.#request('PATCH', `/api/v1/nodes/${node.name}/status`, status, 'application/merge-patch+json');
    if (patched.status !== 200) throw new Error(`node ${node.name} status: HTTP ${patched.status} ${patched.text}`);
  }

  /* ------------------------------------------------------------------------------------ list/watch */

  async #relist(): Promise<void> {
    const res = await this.#request('GET', '/api/v1/pods');
    if (res.status !== 200) throw new Error(`listing pods: HTTP ${res.status} ${res.text}`);
    const list = JSON.parse(res.text) as { metadata?: { resourceVersion?: string }; items?: unknown[] };
    this.#resourceVersion = list.metadata?.resourceVersion ?? '';
    const seen = new Set<string>();
    for (const item of list.items ?? []) {
      const pod = podFrom(item);
      if (!pod) continue;
      seen.add(pod.uid);
      this.#enqueue(pod, 'MODIFIED');
    }
    // Pods deleted while we were not watching.
    for (const [uid, key] of this.#byUid) {
      if (!seen.has(uid)) this.#enqueue({ uid, namespace: key.split('/')[0] ?? '', name: key.split('/')[1] ?? '', nodeName: '', deleting: true, podIP: '', hostNetwork: false, containers: [] }, 'DELETED');
    }
    await Promise.allSettled([...this.#chains.values()]);
  }

  async #watchForever(): Promise<void> {
    while (!this.#stopped) {
      try {
        const expired = await this.#watchOnce();
        if (expired) await this.#relist();
      } catch (error) {
        if (this.#stopped) return;
        this.#log.warn({ err: error }, 'pod watch failed; retrying');
        await realClock.sleep(300);
        try {
          await this.#relist();
        } catch (relistError) {
          this.#log.warn({ err: relistError }, 'pod relist failed');
        }
      }
    }
  }

  /** One watch stream; returns true when the resourceVersion expired (410) and a relist is due. */
  async #watchOnce(): Promise<boolean> {
    const query = `watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=${encodeURIComponent(this.#resourceVersion)}`;
    const res = await fetch(`${this.#opts.apiUrl}/api/v1/pods?${query}`, {
      headers: { authorization: `Bearer ${this.#opts.token}` },
      dispatcher: this.#dispatcher,
      signal: this.#abort.signal,
    });
    if (res.status === 410) return true;
    if (res.status !== 200 || !res.body) throw new Error(`pod watch: HTTP ${res.status}`);
    let buffer = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line === '') continue;
        const event = JSON.parse(line) as { type?: string; object?: { metadata?: { resourceVersion?: string }; code?: number } };
        if (event.type === 'ERROR') {
          if (event.object?.code === 410) return true;
          throw new Error(`pod watch error event: ${line}`);
        }
        const rv = event.object?.metadata?.resourceVersion;
        if (rv) this.#resourceVersion = rv;
        if (event.type === 'BOOKMARK') continue;
        const pod = podFrom(event.object);
        if (pod && (event.type === 'ADDED' || event.type === 'MODIFIED' || event.type === 'DELETED')) this.#enqueue(pod, event.type);
      }
    }
    return false;
  }

  /* ------------------------------------------------------------------------------------- pod work */

  /** Serialises work per pod uid, bounded overall, so 40 pods come up in parallel but one pod's events stay in order. */
  #enqueue(pod: PodObject, type: 'ADDED' | 'MODIFIED' | 'DELETED'): void {
    const previous = this.#chains.get(pod.uid) ?? Promise.resolve();
    const next = previous
      .then(() => this.#withSlot(() => this.#handle(pod, type)))
      .catch((error: unknown) => this.#log.error({ err: error, pod: `${pod.namespace}/${pod.name}` }, 'pod sync failed'));
    this.#chains.set(pod.uid, next);
    void next.then(() => {
      if (this.#chains.get(pod.uid) === next) this.#chains.delete(pod.uid);
    });
  }

  async #handle(pod: PodObject, type: 'ADDED' | 'MODIFIED' | 'DELETED'): Promise<void> {
    if (this.#stopped) return;
    const key = `${pod.namespace}/${pod.name}`;
    if (type === 'DELETED' || pod.deleting) return this.#teardown(pod.uid);
    if (pod.hostNetwork) return;
    if (pod.nodeName === '') return this.#schedule(pod);
    if (!this.#nodeNames.has(pod.nodeName) || this.#byUid.has(pod.uid)) return;

    const stale = this.#running.get(key);
    if (stale && stale.uid !== pod.uid) await this.#teardown(stale.uid);
    const attachment = await this.#opts.network.addPod(pod.nodeName, key);
    this.#byUid.set(pod.uid, key);
    this.#running.set(key, { uid: pod.uid, attachment });
    const now = new Date(realClock.now()).toISOString();
    const hostIP = this.#opts.network.mode === 'netns' ? attachment.ip.replace(/\.\d+$/, '.1') : '127.0.0.1';
    const status = {
      status: {
        phase: 'Running',
        podIP: attachment.ip,
        podIPs: [{ ip: attachment.ip }],
        hostIP,
        startTime: now,
        containerStatuses: pod.containers.map((c) => ({
          name: c.name,
          image: c.image,
          imageID: '',
          ready: true,
          started: true,
          restartCount: 0,
          state: { running: { startedAt: now } },
        })),
        conditions: [
          { type: 'PodScheduled', status: 'True', lastTransitionTime: now },
          { type: 'Initialized', status: 'True', lastTransitionTime: now },
          { type: 'ContainersReady', status: 'True', lastTransitionTime: now },
          { type: 'Ready', status: 'True', lastTransitionTime: now },
        ],
      },
    };
    const res = await this.#request('PATCH', `/api/v1/namespaces/${pod.namespace}/pods/${pod.name}/status`, status, 'application/merge-patch+json');
    if (res.status === 404) return this.#teardown(pod.uid);
    if (res.status !== 200) throw new Error(`pod ${key} status: HTTP ${res.status} ${res.text}`);
    this.#log.info({ pod: key, node: pod.nodeName, podIP: attachment.ip }, 'pod running');
    this.#opts.onPodStarted?.(attachment);
    for (const wake of this.#waiters.get(key) ?? []) wake(attachment);
    this.#waiters.delete(key);
  }

  async #schedule(pod: PodObject): Promise<void> {
    const nodes = this.#opts.nodes;
    const node = nodes[this.#nextNode++ % nodes.length];
    if (!node) return;
    // As the scheduler: the binding subresource, with the pod's uid as precondition (409 when it went or was bound).
    const res = await this.#request(
      'POST',
      `/api/v1/namespaces/${pod.namespace}/pods/${pod.name}/binding`,
      { apiVersion: 'v1', kind: 'Binding', metadata: { name: pod.name, uid: pod.uid }, target: { apiVersion: 'v1', kind: 'Node', name: node.name } },
    );
    if (res.status !== 201 && res.status !== 404 && res.status !== 409) {
      throw new Error(`scheduling ${pod.namespace}/${pod.name}: HTTP ${res.status} ${res.text}`);
    }
  }

  async #teardown(uid: string): Promise<void> {
    const key = this.#byUid.get(uid);
    if (key === undefined) return;
    this.#byUid.delete(uid);
    const running = this.#running.get(key);
    if (running?.uid === uid) {
      this.#running.delete(key);
      await this.#opts.network.removePod(key);
      this.#log.info({ pod: key }, 'pod removed');
      this.#opts.onPodRemoved?.(key);
    }
  }

  async #withSlot<T>(work: () => Promise<T>): Promise<T> {
    if (this.#slots === 0) await new Promise<void>((resolve) => this.#queued.push(resolve));
    else this.#slots--;
    try {
      return await work();
    } finally {
      const next = this.#queued.shift();
      if (next) next();
      else this.#slots++;
    }
  }

  async #request(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; text: string }> {
    const res = await fetch(`${this.#opts.apiUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.#opts.token}`,
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': contentType }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      dispatcher: this.#dispatcher,
    });
    return { status: res.status, text: await res.text() };
  }
}

function podFrom(obj: unknown): PodObject | null {
  if (typeof obj !== 'object' || obj === null) return null;
  const o = obj as { metadata?: Record<string, unknown>; spec?: Record<string, unknown>; status?: Record<string, unknown> };
  const m = o.metadata ?? {};
  const str = (v: unknown): string => (typeof v === 'string' ? v : '');
  const uid = str(m.uid);
  if (uid === '') return null;
  return {
    uid,
    namespace: str(m.namespace),
    name: str(m.name),
    nodeName: str(o.spec?.nodeName),
    deleting: str(m.deletionTimestamp) !== '',
    podIP: str(o.status?.podIP),
    hostNetwork: o.spec?.hostNetwork === true,
    containers: (Array.isArray(o.spec?.containers) ? (o.spec.containers as unknown[]) : []).map((c) => {
      const container = (typeof c === 'object' && c !== null ? c : {}) as Record<string, unknown>;
      return { name: str(container.name), image: str(container.image) };
    }),
  };
}


/* ------------------------------------------------------------------------------------- node info */

const KUBELET_VERSION = 'v1.32.0-sandbox';

/**
 * status.nodeInfo with every field a real kubelet reports (clients such as the Python client reject a Node that
 * lacks one): the host's kernel and OS image, IDs stable per node name, a boot ID per kubelet start.
 */
export function nodeSystemInfo(nodeName: string, bootID: string): Record<string, string> {
  const digest = createHash('sha256').update(`sandbox-node:${nodeName}`).digest('hex');
  const uuid = `${digest.slice(32, 40)}-${digest.slice(40, 44)}-4${digest.slice(45, 48)}-a${digest.slice(49, 52)}-${digest.slice(52, 64)}`;
  return {
    machineID: digest.slice(0, 32),
    systemUUID: uuid,
    bootID,
    kernelVersion: release(),
    osImage: hostOsImage(),
    containerRuntimeVersion: 'sandbox://0.1.0',
    kubeletVersion: KUBELET_VERSION,
    kubeProxyVersion: KUBELET_VERSION,
    operatingSystem: 'linux',
    architecture: goArch(),
  };
}

/** GOARCH spelling of the host's architecture, as kubelet reports it. */
function goArch(): string {
  const names: Record<string, string> = { x64: 'amd64', ia32: '386', arm: 'arm', arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return names[arch()] ?? arch();
}

/** PRETTY_NAME from /etc/os-release, as kubelet reads it. */
function hostOsImage(): string {
  try {
    const m = /^PRETTY_NAME=(?:"([^"]*)"|(.*))$/m.exec(readFileSync('/etc/os-release', 'utf8'));
    const name = m?.[1] ?? m?.[2];
    if (name) return name;
  } catch {
    // no os-release (not every Linux has one): kubelet falls back the same way
  }
  return 'Linux';
}
