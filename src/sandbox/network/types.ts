// What the kubelet and the sandbox need from a pod network, whichever mode builds it.

export type NetworkMode = 'netns' | 'loopback';

export interface NodeAttachment {
  readonly node: string;
  /** The node's network namespace (netns mode). */
  readonly netns?: string;
  /** The node's address on its pod bridge (netns mode). */
  readonly nodeIp?: string;
  /** The node's address as the root namespace reaches it (netns mode: its uplink; loopback: absent, 127.0.0.1). */
  readonly hostAddress?: string;
  /** Where the emulators listen, reachable from this node. */
  readonly serviceAddress: string;
  /** Words to put before a command so that it runs on the node (`ip netns exec <ns>`), empty in loopback mode. */
  readonly commandPrefix: readonly string[];
}

export interface PodAttachment {
  /** `<namespace>/<name>`. */
  readonly key: string;
  readonly node: string;
  /** The pod IP, written into status.podIP. */
  readonly ip: string;
  readonly netns?: string;
  /** Words to put before a command so that it runs as the pod's network identity. */
  readonly commandPrefix: readonly string[];
  /** Environment a pod process needs in this mode (loopback: binding its sockets to the pod IP). */
  readonly env: Readonly<Record<string, string>>;
}

export interface PodNetwork {
  readonly mode: NetworkMode;
  /** Address the emulators bind to: 127.0.0.1 (loopback) or the sandbox's service address (netns). */
  readonly serviceAddress: string;
  /** A short name unique among running sandboxes (prefix of every namespace and link). */
  readonly name: string;
  addNode(node: string): Promise<NodeAttachment>;
  node(node: string): NodeAttachment | undefined;
  /** Gives a pod its address (idempotent per key). */
  addPod(node: string, key: string): Promise<PodAttachment>;
  /** Frees the pod's address, kills its processes and removes its namespace; unknown keys are ignored. */
  removePod(key: string): Promise<void>;
  pod(key: string): PodAttachment | undefined;
  ownedNamespaces(): string[];
  /** Removes everything made, pass or fail; safe to call twice. */
  destroy(): Promise<void>;
}
