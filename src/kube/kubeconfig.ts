// Builds the client-node KubeConfig: from a kubeconfig file, from a YAML string (the emulator), or in-cluster.
import {
  KubeConfig,
  ServerConfiguration,
  createConfiguration,
  setHeaderOptions,
  type ApiType,
  type RequestContext,
} from '@kubernetes/client-node';

export { RateLimiter, type RateLimiterOptions } from './ratelimit.js';

export interface LoadKubeConfigOptions {
  /** Path of a kubeconfig file (the `--kubeconfig` flag). */
  readonly kubeconfigPath?: string;
  /** Kubeconfig contents, e.g. the emulator's `kubeconfigYaml`. */
  readonly kubeconfigYaml?: string;
  /** Use the pod's service account (token, CA, KUBERNETES_SERVICE_HOST/PORT). */
  readonly inCluster?: boolean;
  /** Context to select instead of the file's current-context. */
  readonly context?: string;
  /** Sent as User-Agent on every typed call, watch and raw request (e.g. `aad-pod-identity/mic/0.1.0`). */
  readonly userAgent?: string;
}

/**
 * Loads a KubeConfig. Precedence: YAML string, file path, in-cluster, then client-node's default discovery
 * (KUBECONFIG, ~/.kube/config, in-cluster service account when running in a pod).
 */
export function loadKubeConfig(opts: LoadKubeConfigOptions = {}): KubeConfig {
  const kc = opts.userAgent ? new UserAgentKubeConfig(opts.userAgent) : new KubeConfig();
  try {
    if (opts.kubeconfigYaml !== undefined) kc.loadFromString(opts.kubeconfigYaml);
    else if (opts.kubeconfigPath) kc.loadFromFile(opts.kubeconfigPath);
    else if (opts.inCluster) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (err) {
    throw new Error(`cannot load kubeconfig${opts.kubeconfigPath ? ` from ${opts.kubeconfigPath}` : ''}`, { cause: err });
  }
  if (opts.context) kc.setCurrentContext(opts.context);
  if (!kc.getCurrentCluster()) throw new Error('kubeconfig has no current cluster');
  return kc;
}

/** The API server URL of the current context. */
export function serverUrl(kc: KubeConfig): string {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  return cluster.server;
}

/**
 * client-node hard-codes its User-Agent in `makeApiClient` and sends `undici` on watches; this subclass puts ours on
 * both paths. Typed calls: a middleware that runs after authentication. Watches and raw requests: the auth step.
 */
class UserAgentKubeConfig extends KubeConfig {
  readonly #userAgent: string;

  constructor(userAgent: string) {
    super();
    this.#userAgent = userAgent;
  }

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    context.setHeaderParam('User-Agent', this.#userAgent);
  }

  override makeApiClient<T extends ApiType>(apiClientType: new (config: ReturnType<typeof createConfiguration>) => T): T {
    const cluster = this.getCurrentCluster();
    if (!cluster) throw new Error('No active cluster!');
    const config = createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: this },
      middleware: setHeaderOptions('User-Agent', this.#userAgent).middleware,
    });
    return new apiClientType(config);
  }
}
