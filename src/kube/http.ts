// HTTP to the API server: MIC's hot path reuses one connection pool per KubeConfig (kubeHttp),
// and patchOptions picks the patch type for client-node's typed calls.
//
// Why not the typed client-node APIs for AAI writes and events: client-node 2.0.1 builds a new undici Agent for
// every request whenever TLS options are set (a CA, a client certificate or skipTLSVerify), so every write opens a
// new connection (and TLS handshake), and its fetch/ObjectSerializer path costs ~1.5 ms of CPU per request. At
// thousands of writes that was most of MIC's CPU. Here authentication still comes from the KubeConfig on every
// request (tokens may rotate); only the first Agent is kept, and requests go through undici.request.
// Deep imports: client-node's index loads its whole generated API (see access.ts).
import { ApiException } from '@kubernetes/client-node/dist/gen/apis/exception.js';
import { HttpMethod, RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';
import { setHeaderOptions } from '@kubernetes/client-node/dist/middleware.js';
import { PatchStrategy } from '@kubernetes/client-node/dist/patch.js';
import type { KubeAccess } from './access.js';
import pLimit from 'p-limit';
import { request, type Dispatcher } from 'undici';

export interface KubeHttp {
  /** Sends a JSON request; resolves with the parsed body of a 2xx answer, rejects with ApiException otherwise. */
  send(method: 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'GET', path: string, body?: unknown, contentType?: string, signal?: AbortSignal): Promise<unknown>;
}

/**
 * Requests in flight at once. The rate limiter bounds requests per second, not how many wait for an answer: with a
 * burst of 2,000 and a slow API server, thousands of sockets, bodies and parsers were alive at once (client-go's
 * HTTP/2 connection bounds this with the server's concurrent-stream limit). Waiting requests hold only a closure.
 */
const MAX_IN_FLIGHT = 32;

export function kubeHttp(kc: KubeAccess, maxInFlight = MAX_IN_FLIGHT): KubeHttp {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const base = cluster.server.replace(/\/+$/, '');
  const auth = sharedDispatcherAuth(kc);
  const inFlight = pLimit(maxInFlight);
  return {
    send(method, path, body, contentType = 'application/json', signal) {
      return inFlight(() => sendNow(method, path, body, contentType, signal));
    },
  };

  async function sendNow(
    method: 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'GET',
    path: string,
    body: unknown,
    contentType: string,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    signal?.throwIfAborted();
    const url = base + path;
    const ctx = new RequestContext(url, HttpMethod[method]);
    await auth.applySecurityAuthentication(ctx);
    const headers: Record<string, string> = { ...ctx.getHeaders(), accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = contentType;
    const dispatcher = ctx.getDispatcher() as Dispatcher | undefined;
    const res = await request(url, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      ...(dispatcher !== undefined ? { dispatcher } : {}),
      ...(signal !== undefined ? { signal } : {}),
    });
    const text = await res.body.text();
    if (res.statusCode < 200 || res.statusCode > 299) {
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') h[k] = v;
      throw new ApiException<string>(res.statusCode, `HTTP-Code: ${res.statusCode}\n${method} ${path}\nBody: ${text}`, text, h);
    }
    if (text === '') return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new Error(`${method} ${path}: the answer is not JSON`, { cause: err });
    }
  }
}

type Auth = Pick<KubeAccess, 'applySecurityAuthentication'>;

const shared = new WeakMap<KubeAccess, Auth>();

/** The KubeConfig's authentication, with the dispatcher of its first request reused for every later one. */
function sharedDispatcherAuth(kc: KubeAccess): Auth {
  const existing = shared.get(kc);
  if (existing) return existing;
  let dispatcher: ReturnType<RequestContext['getDispatcher']>;
  const auth: Auth = {
    async applySecurityAuthentication(ctx: RequestContext): Promise<void> {
      await kc.applySecurityAuthentication(ctx);
      const fresh = ctx.getDispatcher();
      if (fresh === undefined) return;
      // The fresh Agent has opened no connection; it is simply dropped.
      if (dispatcher === undefined) dispatcher = fresh;
      else ctx.setDispatcher(dispatcher);
    },
  };
  shared.set(kc, auth);
  return auth;
}

export type PatchType = 'merge' | 'json' | 'strategic';

/**
 * Options argument for any typed client-node patch call, e.g. `core.patchNamespacedPod(req, patchOptions('merge'))`:
 * client-node 2.x sends JSON Patch unless the content type is chosen per call.
 */
export function patchOptions(type: PatchType): ReturnType<typeof setHeaderOptions> {
  const contentType =
    type === 'merge' ? PatchStrategy.MergePatch : type === 'json' ? PatchStrategy.JsonPatch : PatchStrategy.StrategicMergePatch;
  return setHeaderOptions('Content-Type', contentType);
}
