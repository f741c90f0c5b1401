// startSandbox: the local world. A Kubernetes API emulator with the CRDs, an Azure emulator with a subscription, a
// resource group, the nodes' VMSS (or VMs) and a few user-assigned identities, an IMDS per node, the kubelet, one NMI
// per node and two leader-elected MIC replicas (child processes running cmd/nmi.ts and cmd/mic.ts unchanged).
// Writes DIR/kubeconfig, DIR/ca.pem, DIR/azure.json and DIR/endpoints.json; stop() removes everything it made.
//
// MIC and NMI are started as processes, by path, never imported: the sandbox is written from the protocol, and the
// product runs here exactly as it does on a cluster (flags, kubeconfig, azure.json, iptables in the node's namespace).

import { randomUUID } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { startApiServer, type ApiServerHandle } from './apiserver/index.js';
import { startAzureEmulator, type AzureEmulator, type ImdsListener, type UserAssignedIdentity } from './cloud/index.js';
import type { EmulatorOperation } from './cloud/index.js';
import { createKubelet, type Kubelet, type KubeletNode } from './kubelet.js';
import { createLoopbackNetwork } from './network/loopback.js';
import { createNetnsNetwork } from './network/netns.js';
import { parseReadyLine, startProcess, type ManagedProcess } from './network/processes.js';
import type { NetworkMode, PodAttachment, PodNetwork } from './network/types.js';
import { run, type CommandResult } from './network/exec.js';
import { mirrorPods } from './mirror-pods.js';

export type { NetworkMode, PodAttachment, PodNetwork } from './network/types.js';
export { netnsAvailable } from './network/netns.js';
export { bindPodIpNodeOptions } from './network/loopback.js';
export { parseReadyLine } from './network/processes.js';

export interface SandboxOptions {
  readonly stateDir: string;
  /** Repository root: where cmd/mic.ts, cmd/nmi.ts and config/crd are. */
  readonly repoRoot: string;
  /** The environment children inherit (PATH and the like); only cmd/ and tests may read process.env. */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly logger: Logger;
  readonly nodes?: number;
  readonly compute?: 'vmss' | 'vms';
  readonly network?: NetworkMode;
  /** User-assigned identities made in the emulator's MSI up front (default 3). */
  readonly identities?: number;
  /**
   * The CRDs the API emulator starts with: every *.yaml/*.yml/*.json in this directory (default
   * `<repoRoot>/config/crd`). An upgrade test passes a directory with the original's CRD shapes, as a cluster
   * upgraded from the original keeps them (Helm never upgrades crds/).
   */
  readonly crdDir?: string;
  /**
   * MIC replicas started with the sandbox (default 2; 0 starts none) and extra MIC flags. Replicas can be started
   * later with `startMic(index)`, e.g. to switch a cluster over from another controller.
   */
  readonly mic?: { readonly replicas?: number; readonly args?: readonly string[] | ((identities: readonly UserAssignedIdentity[]) => readonly string[]) };
  /** Extra NMI flags (after the sandbox's own, so they win). */
  readonly nmi?: { readonly args?: readonly string[] };
  /** Node path used to run children (default `node` on the PATH). */
  readonly nodeBinary?: string;
  /**
   * Federated mode on (default off): MIC and NMI get `--enable-federated-identities` (before the extra flags, so a
   * test can still turn it off), and MIC's principal gets Managed Identity Contributor on the resource group, as
   * docs/federated.md tells an admin to grant.
   */
  readonly federation?: boolean;
  /** Azure emulator latency per operation from the start (e.g. `{ vmss_patch: 2000, fic_put: 1000 }`). */
  readonly azureLatencyMs?: Readonly<Partial<Record<EmulatorOperation, number>>>;
}

export interface SandboxNode {
  readonly name: string;
  readonly providerID: string;
  /** NMI's token URL, as seen from the node (inside its namespace in netns mode). */
  readonly nmiUrl: string;
  readonly imdsUrl: string;
  readonly netns?: string;
}

export interface SandboxEndpoints {
  readonly network: NetworkMode;
  readonly apiServer: string;
  readonly kubeconfig: string;
  readonly caFile: string;
  readonly azure: {
    readonly url: string;
    readonly tenantId: string;
    readonly subscriptionId: string;
    readonly resourceGroup: string;
    readonly compute: 'vmss' | 'vms';
    /** The VMSS name, or the VM names. */
    readonly computeNames: readonly string[];
    /** The service principal MIC runs as (azure.json), granted VM Contributor and MI Operator on the resource group. */
    readonly clusterPrincipal: { readonly clientId: string; readonly objectId: string };
  };
  readonly nodes: readonly SandboxNode[];
  /** The API server's service-account issuer (`iss` of its tokens) and where its keys are published. */
  readonly serviceAccountIssuer: { readonly issuer: string; readonly jwksUri: string };
  readonly identities: readonly { readonly name: string; readonly id: string; readonly clientId: string; readonly principalId: string }[];
}

export interface PodCommand {
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

export interface Sandbox {
  readonly stateDir: string;
  readonly endpoints: SandboxEndpoints;
  readonly network: PodNetwork;
  readonly api: ApiServerHandle;
  readonly azure: AzureEmulator;
  readonly kubelet: Kubelet;
  readonly resourceGroup: string;
  /** MIC replicas by index (undefined once stopped). */
  mic(index: number): ManagedProcess | undefined;
  startMic(index: number): Promise<ManagedProcess>;
  stopMic(index: number): Promise<void>;
  nmi(node: string): ManagedProcess | undefined;
  /**
   * Restarts a node's NMI (its rules stay while it is down, so pods are refused, and are refreshed on start);
   * `extraArgs` are appended to its flags (the last occurrence of a flag wins).
   */
  restartNmi(node: string, opts?: { kill?: boolean; extraArgs?: readonly string[] }): Promise<void>;
  /** How to run argv as a process of the pod `<namespace>/<name>` (which must be Running). */
  podCommand(key: string, argv: readonly string[]): PodCommand;
  /** Runs argv on a node (in its network namespace in netns mode) and collects its output. */
  execInNode(node: string, argv: readonly string[], opts?: { timeoutMs?: number }): Promise<CommandResult>;
  /** Runs argv in the pod and collects its output. */
  execInPod(key: string, argv: readonly string[], opts?: { timeoutMs?: number }): Promise<CommandResult>;
  /** Makes a user-assigned identity in the emulator's MSI (in the sandbox's resource group). */
  createIdentity(name: string): UserAssignedIdentity;
  stop(): Promise<void>;
}

const VMSS_NAME = 'aks-nodepool1-12345678-vmss';
const VM_PREFIX = 'aks-nodepool1-12345678-';

export async function startSandbox(opts: SandboxOptions): Promise<Sandbox> {
  const log = opts.logger.child({ component: 'sandbox' });
  const stateDir = opts.stateDir;
  const logsDir = join(stateDir, 'logs');
  await mkdir(logsDir, { recursive: true });
  await mkdir(join(stateDir, 'pods'), { recursive: true });
  const nodeCount = opts.nodes ?? 2;
  const compute = opts.compute ?? 'vmss';
  const mode = opts.network ?? 'loopback';
  const node = opts.nodeBinary ?? 'node';
  const childEnv = (extra: Record<string, string> = {}): Record<string, string> => ({ NODE_EXTRA_CA_CERTS: caFile, ...extra });
  const cleanups: Array<() => Promise<unknown>> = [];
  const kubeconfig = join(stateDir, 'kubeconfig');
  const caFile = join(stateDir, 'ca.pem');
  const azureJson = join(stateDir, 'azure.json');

  const cleanup = async () => {
    for (const step of cleanups.reverse()) {
      try {
        await step();
      } catch (error) {
        log.error({ err: error }, 'cleanup step failed');
      }
    }
    cleanups.length = 0;
  };

  try {
    const network = mode === 'netns' ? await createNetnsNetwork() : createLoopbackNetwork();
    cleanups.push(() => network.destroy());
    const host = network.serviceAddress;

    const token = randomUUID();
    const api = await startApiServer({ host, tls: true, token, crdDir: opts.crdDir ?? join(opts.repoRoot, 'config', 'crd'), bookmarkIntervalMs: 5000 });
    cleanups.push(() => api.stop());
    await api.writeKubeconfig(kubeconfig);

    const azure = await startAzureEmulator({
      host,
      caFile: join(stateDir, 'azure-ca.pem'),
      lro: 'async',
      logger: log.child({ component: 'azure' }),
      ...(opts.azureLatencyMs ? { latencyMs: opts.azureLatencyMs } : {}),
    });
    cleanups.push(() => azure.stop());
    await writeFile(caFile, `${azure.caPem.trim()}\n${(api.caPem ?? '').trim()}\n`, { mode: 0o644 });
    // Azure AD reads the cluster's service-account issuer discovery over HTTPS, as it reads AKS's public issuer.
    if (api.caPem) azure.trustIssuerCa(api.caPem);

    const resourceGroup = 'sandbox-nodes';
    azure.createResourceGroup(resourceGroup);
    const identities = Array.from({ length: opts.identities ?? 3 }, (_, i) => azure.createUserAssignedIdentity(resourceGroup, `sandbox-identity-${i + 1}`));

    // MIC's own credentials: a service principal of the emulator's tenant, in azure.json as on an AKS node.
    const micSecret = randomUUID();
    const micSp = azure.registerServicePrincipal({ clientId: randomUUID(), secret: micSecret });
    // What the docs tell an admin to grant the cluster principal (nodes and identities share one resource group here).
    const groupId = `/subscriptions/${azure.subscriptionId}/resourceGroups/${resourceGroup}`;
    azure.grantRole(micSp.objectId, 'Virtual Machine Contributor', groupId);
    azure.grantRole(micSp.objectId, 'Managed Identity Operator', groupId);
    // Federated credential writes need Contributor: Operator only reads them (docs/federated.md).
    if (opts.federation) azure.grantRole(micSp.objectId, 'Managed Identity Contributor', groupId);
    const federationArgs = opts.federation ? ['--enable-federated-identities'] : [];
    await writeFile(
      azureJson,
      JSON.stringify(
        {
          cloud: 'AzurePublicCloud',
          tenantId: azure.tenantId,
          aadClientId: micSp.clientId,
          aadClientSecret: micSecret,
          subscriptionId: azure.subscriptionId,
          resourceGroup,
          vmType: compute === 'vmss' ? 'vmss' : 'standard',
          useManagedIdentityExtension: false,
        },
        null,
        2,
      ),
      { mode: 0o600 },
    );

    const kubeletNodes: KubeletNode[] = [];
    const imdsTargets: Array<{ vm: string } | { vmss: string; instanceId: string }> = [];
    const computeNames: string[] = [];
    if (compute === 'vmss') {
      const info = azure.createVmss(resourceGroup, VMSS_NAME, { instances: nodeCount });
      computeNames.push(VMSS_NAME);
      info.instances.forEach((instanceId) => {
        const name = `${VMSS_NAME}${Number(instanceId).toString(36).padStart(6, '0')}`;
        kubeletNodes.push({ name, providerID: `azure://${info.id}/virtualMachines/${instanceId}`, labels: { agentpool: 'nodepool1' } });
        imdsTargets.push({ vmss: VMSS_NAME, instanceId });
      });
    } else {
      for (let i = 0; i < nodeCount; i++) {
        const name = `${VM_PREFIX}${i}`;
        const info = azure.createVm(resourceGroup, name);
        computeNames.push(name);
        kubeletNodes.push({ name, providerID: `azure://${info.id}`, labels: { agentpool: 'nodepool1' } });
        imdsTargets.push({ vm: name });
      }
    }

    // MIC and NMI run as host processes; mirror pods show them to kubectl and doctor as a cluster would.
    const mirrors = mirrorPods({ apiUrl: api.url, token, ...(api.caPem ? { caPem: api.caPem } : {}) });
    const podFile = (key: string) => join(stateDir, 'pods', `${key.replace('/', '_')}.json`);
    const nmiUrls = new Map<string, string>();
    const kubelet = createKubelet({
      apiUrl: api.url,
      token,
      ...(api.caPem ? { caPem: api.caPem } : {}),
      nodes: kubeletNodes,
      network,
      log,
      onPodStarted: (pod) => void writeFile(podFile(pod.key), JSON.stringify({ ...pod, nmiUrl: nmiUrls.get(pod.node) ?? '' })).catch(() => undefined),
      onPodRemoved: (key) => void rm(podFile(key), { force: true }),
    });
    cleanups.push(() => kubelet.stop());
    await kubelet.start();

    // One IMDS per node, reachable from the node only through the service address.
    const imds = new Map<string, ImdsListener>();
    for (const [i, n] of kubeletNodes.entries()) {
      const target = imdsTargets[i];
      if (target) imds.set(n.name, await azure.startImds(target, { host, port: 0 }));
    }

    const nmis = new Map<string, ManagedProcess>();
    const nmiArgv = (nodeName: string): string[] => {
      const prefix = network.node(nodeName)?.commandPrefix ?? [];
      const common = [
        `--node=${nodeName}`,
        `--kubeconfig=${kubeconfig}`,
        `--imds-endpoint=${imds.get(nodeName)?.url ?? ''}`,
        '--log-format=json',
        '--allow-network-plugin-kubenet',
        // The emulator's AAD stands in for the cloud's authority, which NMI allows only when told so.
        `--allowed-ad-endpoints=${azure.url}`,
      ];
      const modeArgs =
        mode === 'netns'
          ? ['--nmi-port=2579', '--http-probe-port=8085', '--prometheus-port=9090']
          : [
              '--manage-iptables=false',
              '--nmi-listen-address=127.0.0.1',
              '--nmi-port=0',
              '--http-probe-port=0',
              '--probe-bind-address=127.0.0.1',
              '--prometheus-port=0',
              '--metrics-bind-address=127.0.0.1',
            ];
      return [...prefix, node, '--import', 'tsx', join(opts.repoRoot, 'cmd', 'nmi.ts'), ...common, ...modeArgs, ...federationArgs, ...(opts.nmi?.args ?? [])];
    };
    const startNmiFor = async (nodeName: string, extraArgs: readonly string[] = []): Promise<ManagedProcess> => {
      const p = await startProcess(
        {
          name: `nmi-${nodeName}`,
          argv: [...nmiArgv(nodeName), ...extraArgs],
          // Tenant and authority for --enable-federated-identities (read only with that flag), as azure.json would give them.
          env: childEnv({ NODE_NAME: nodeName, TENANT_ID: azure.tenantId, CLOUD: 'AzurePublicCloud', AZURE_AUTHORITY_HOST: azure.url }),
          cwd: opts.repoRoot,
          logFile: join(logsDir, `nmi-${nodeName}.log`),
          isReadyLine: (line) => parseReadyLine(line) !== null,
          readyTimeoutMs: 60_000,
        },
        opts.env,
      );
      const ready = parseReadyLine(p.readyLine);
      nmiUrls.set(nodeName, typeof ready?.url === 'string' ? ready.url : '');
      nmis.set(nodeName, p);
      await mirrors.put({
        namespace: 'kube-system',
        name: `nmi-${nodeName}`,
        component: 'nmi',
        nodeName,
        ip: network.node(nodeName)?.hostAddress ?? '127.0.0.1',
        probePort: probePortOf(ready),
      });
      return p;
    };
    cleanups.push(async () => {
      await Promise.all([...nmis.values()].map((p) => p.stop('SIGTERM', 20_000)));
    });

    const mics = new Map<number, ManagedProcess>();
    const micArgv = (index: number): string[] => [
      node,
      '--import',
      'tsx',
      join(opts.repoRoot, 'cmd', 'mic.ts'),
      `--kubeconfig=${kubeconfig}`,
      `--cloudconfig=${azureJson}`,
      `--arm-endpoint=${azure.url}`,
      '--arm-poll-interval=200ms',
      `--leader-election-instance=mic-${index}`,
      '--http-probe-port=0',
      '--probe-bind-address=127.0.0.1',
      '--prometheus-port=0',
      '--metrics-bind-address=127.0.0.1',
      '--log-format=json',
      ...federationArgs,
      ...(typeof opts.mic?.args === 'function' ? opts.mic.args(identities) : (opts.mic?.args ?? [])),
    ];
    const startMic = async (index: number): Promise<ManagedProcess> => {
      const p = await startProcess(
        {
          name: `mic-${index}`,
          argv: micArgv(index),
          env: childEnv({ MIC_POD_NAMESPACE: 'default', HOSTNAME: `mic-${index}`, AZURE_AUTHORITY_HOST: azure.url }),
          cwd: opts.repoRoot,
          logFile: join(logsDir, `mic-${index}.log`),
          isReadyLine: (line) => parseReadyLine(line) !== null,
          readyTimeoutMs: 60_000,
        },
        opts.env,
      );
      mics.set(index, p);
      await mirrors.put({
        namespace: 'default',
        name: `mic-${index}`,
        component: 'mic',
        nodeName: kubeletNodes[index % kubeletNodes.length]?.name ?? '',
        ip: '127.0.0.1',
        probePort: probePortOf(parseReadyLine(p.readyLine)),
      });
      return p;
    };
    cleanups.push(async () => {
      await Promise.all([...mics.values()].map((p) => p.stop('SIGTERM', 15_000)));
    });
    // All children start together: most of their start-up is compiling TypeScript, which overlaps well.
    await Promise.all([
      ...kubeletNodes.map((n) => startNmiFor(n.name)),
      ...Array.from({ length: opts.mic?.replicas ?? 2 }, (_, i) => startMic(i)),
    ]);

    const nodes: SandboxNode[] = kubeletNodes.map((n) => ({
      name: n.name,
      providerID: n.providerID,
      nmiUrl: nmiUrls.get(n.name) ?? '',
      imdsUrl: imds.get(n.name)?.url ?? '',
      ...(network.node(n.name)?.netns ? { netns: network.node(n.name)?.netns } : {}),
    }));
    const endpoints: SandboxEndpoints = {
      network: mode,
      apiServer: api.url,
      kubeconfig,
      caFile,
      azure: {
        url: azure.url,
        tenantId: azure.tenantId,
        subscriptionId: azure.subscriptionId,
        resourceGroup,
        compute,
        computeNames,
        clusterPrincipal: { clientId: micSp.clientId, objectId: micSp.objectId },
      },
      nodes,
      serviceAccountIssuer: { issuer: api.serviceAccountIssuer.issuer, jwksUri: api.serviceAccountIssuer.jwksUri },
      identities: identities.map((i) => ({ name: i.name, id: i.id, clientId: i.clientId, principalId: i.principalId })),
    };
    await writeFile(join(stateDir, 'endpoints.json'), `${JSON.stringify(endpoints, null, 2)}\n`);

    const podCommand = (key: string, argv: readonly string[]): PodCommand => {
      const pod = kubelet.pods().get(key);
      if (!pod) throw new Error(`pod ${key} is not running in this sandbox`);
      return commandForPod(pod, nmiUrls.get(pod.node) ?? '', argv);
    };

    let stopped = false;
    return {
      stateDir,
      endpoints,
      network,
      api,
      azure,
      kubelet,
      resourceGroup,
      mic: (index) => mics.get(index),
      startMic,
      stopMic: async (index) => {
        await mics.get(index)?.stop('SIGTERM', 15_000);
        mics.delete(index);
        await mirrors.remove('default', `mic-${index}`);
      },
      nmi: (name) => nmis.get(name),
      restartNmi: async (name, o = {}) => {
        const p = nmis.get(name);
        if (p) await p.stop(o.kill ? 'SIGKILL' : 'SIGTERM', 20_000);
        await startNmiFor(name, o.extraArgs);
      },
      podCommand,
      execInNode: (name, argv, o = {}) => run([...(network.node(name)?.commandPrefix ?? []), ...argv], { timeoutMs: o.timeoutMs ?? 60_000 }),
      execInPod: async (key, argv, o = {}) => {
        const cmd = podCommand(key, argv);
        return run(['env', ...Object.entries(cmd.env).map(([k, v]) => `${k}=${v}`), ...cmd.argv], { timeoutMs: o.timeoutMs ?? 60_000 });
      },
      createIdentity: (name) => azure.createUserAssignedIdentity(resourceGroup, name),
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await cleanup();
        log.info('sandbox stopped');
      },
    };
  } catch (error) {
    await cleanup();
    throw new Error('the sandbox failed to start', { cause: error });
  }
}

/** The probe port from a child's ready line (`"probe":"http://host:port"`). */
function probePortOf(ready: Record<string, unknown> | null): number {
  const probe = typeof ready?.probe === 'string' ? ready.probe : '';
  const port = probe ? Number(new URL(probe).port) : NaN;
  if (!Number.isInteger(port) || port <= 0) throw new Error(`no probe port in the ready line ${JSON.stringify(ready)}`);
  return port;
}

/** argv and environment that run a command as the pod: in its namespace, or bound to its loopback IP with NMI as IMDS. */
export function commandForPod(pod: PodAttachment, nmiUrl: string, argv: readonly string[]): PodCommand {
  if (pod.netns) return { argv: [...pod.commandPrefix, ...argv], env: { ...pod.env } };
  // Loopback: nothing intercepts 169.254.169.254, so the SDK is told where the node's NMI is, as the original's
  // docs tell users to do for local runs.
  return { argv: [...argv], env: { ...pod.env, AZURE_POD_IDENTITY_AUTHORITY_HOST: nmiUrl } };
}
