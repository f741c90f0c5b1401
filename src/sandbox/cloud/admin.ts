import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AzureEmulator } from './index.js';
import type { ImdsListener } from './imds.js';
import { isRecord, parseJson, readBody, sendJson, type RoutedRequest } from './http.js';

/** Admin methods callable over HTTP as `POST /_admin/<method>` with body `{"args": [...]}` (for the sandbox CLI). */
const METHODS = [
  'createResourceGroup',
  'createVm',
  'createVmss',
  'getVm',
  'getVmss',
  'setVmIdentities',
  'createUserAssignedIdentity',
  'deleteUserAssignedIdentity',
  'getUserAssignedIdentity',
  'putFederatedCredential',
  'listFederatedCredentials',
  'deleteFederatedCredential',
  'setFederationPropagation',
  'trustIssuerCa',
  'clearIssuerCache',
  'registerServicePrincipal',
  'grantRole',
  'revokeRole',
  'listRoleAssignments',
  'checkAccess',
  'issueToken',
  'injectFault',
  'clearFaults',
  'setLatency',
  'setLroMode',
  'requestLog',
  'clearRequestLog',
  'startImds',
  'stopImds',
] as const;
type AdminMethod = (typeof METHODS)[number];

const listenersByUrl = new WeakMap<AzureEmulator, Map<string, ImdsListener>>();

export function adminRoute(emulator: AzureEmulator, req: IncomingMessage, res: ServerResponse, url: URL): RoutedRequest | undefined {
  const m = /^\/_admin\/([A-Za-z]+)$/.exec(url.pathname);
  if (!m) return undefined;
  const method = m[1] ?? '';
  return {
    operation: 'admin',
    target: method,
    dialect: 'admin',
    handle: async () => {
      if ((req.method ?? '').toUpperCase() !== 'POST') return sendJson(res, 405, { error: 'use POST with {"args": [...]}' });
      if (!(METHODS as readonly string[]).includes(method)) return sendJson(res, 404, { error: `unknown admin method ${method}` });
      const parsed = parseJson(await readBody(req));
      if (!parsed.ok) return sendJson(res, 400, { error: parsed.error });
      const args = isRecord(parsed.value) && Array.isArray(parsed.value.args) ? (parsed.value.args as unknown[]) : [];
      try {
        const result = await call(emulator, method as AdminMethod, args);
        sendJson(res, 200, { result: result ?? null });
      } catch (err) {
        sendJson(res, 400, { error: (err as Error).message });
      }
    },
  };
}

// Arguments come from a trusted local CLI; the emulator's own methods validate what matters.
async function call(e: AzureEmulator, method: AdminMethod, args: unknown[]): Promise<unknown> {
  const a = args as never[];
  switch (method) {
    case 'startImds': {
      const listener = await e.startImds(a[0], a[1]);
      const map = listenersByUrl.get(e) ?? new Map<string, ImdsListener>();
      listenersByUrl.set(e, map);
      map.set(listener.url, listener);
      return { url: listener.url, host: listener.host, port: listener.port };
    }
    case 'stopImds': {
      const url = String(args[0]);
      const listener = listenersByUrl.get(e)?.get(url);
      if (!listener) throw new Error(`no IMDS listener at ${url}`);
      listenersByUrl.get(e)?.delete(url);
      await listener.stop();
      return true;
    }
    default: {
      const fn = e[method] as (...xs: never[]) => unknown;
      return await fn(...a);
    }
  }
}
