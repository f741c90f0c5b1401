// Typed client-node API objects that reuse one HTTP dispatcher (connection pool) per KubeConfig.
// client-node 2.0.1 builds a new undici Agent for every request whenever TLS options are set (a CA, a client
// certificate or skipTLSVerify), so every write opens a new connection (and TLS handshake). At thousands of writes
// that dominates MIC's CPU; sharing the first Agent keeps connections alive. The TLS options of one KubeConfig do
// not change between requests, and headers (tokens) are still applied per request.
import {
  createConfiguration,
  ServerConfiguration,
  type ApiType,
  type KubeConfig,
  type RequestContext,
  type SecurityAuthentication,
} from '@kubernetes/client-node';

type Dispatcher = ReturnType<RequestContext['getDispatcher']>;

export function pooledApiClient<T extends ApiType>(kc: KubeConfig, api: new (config: ReturnType<typeof createConfiguration>) => T): T {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  return new api(
    createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: sharedDispatcherAuth(kc) },
    }),
  );
}

const shared = new WeakMap<KubeConfig, SecurityAuthentication>();

function sharedDispatcherAuth(kc: KubeConfig): SecurityAuthentication {
  const existing = shared.get(kc);
  if (existing) return existing;
  let dispatcher: Dispatcher;
  const auth: SecurityAuthentication = {
    getName: () => 'kubeconfig with a shared connection pool',
    async applySecurityAuthentication(ctx: RequestContext): Promise<void> {
      await kc.applySecurityAuthentication(ctx);
      const fresh = ctx.getDispatcher();
      if (fresh === undefined) return;
      if (dispatcher === undefined) {
        dispatcher = fresh;
        return;
      }
      // The fresh Agent has no connection yet: closing it costs nothing.
      if (fresh !== dispatcher) void closeQuietly(fresh);
      ctx.setDispatcher(dispatcher);
    },
  };
  shared.set(kc, auth);
  return auth;
}

async function closeQuietly(d: Dispatcher): Promise<void> {
  try {
    await (d as { close?: () => Promise<void> }).close?.();
  } catch {
    // Nothing to clean up on an unused Agent.
  }
}
