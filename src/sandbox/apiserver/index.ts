// startApiServer: the Kubernetes API emulator on a real HTTP(S) socket, with test hooks.

import { readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ApiCore } from './core.js';
import { ApiHttp, type Fault, type RequestLogEntry } from './http.js';
import { isObject, type JsonObject } from './json.js';
import { buildKubeconfig } from './kubeconfig.js';
import type { ResourceType } from './resources.js';
import { generateServerTls } from './tls.js';

export type { Fault, RequestLogEntry } from './http.js';

export interface ApiServerOptions {
  host?: string;
  port?: number;
  tls?: boolean;
  /** Every *.yaml/*.yml/*.json CRD in this directory is applied at start. */
  crdDir?: string;
  /** Watch events kept for watches from an older resourceVersion (default 1000). */
  historyLimit?: number;
  /** When set, requests must carry `Authorization: Bearer <token>`; also the kubeconfig's token. */
  token?: string;
  /** Interval of BOOKMARK events on watches that allow them (default 5000 ms; short in tests). */
  bookmarkIntervalMs?: number;
}

export interface ApiServerHandle {
  readonly url: string;
  readonly kubeconfigYaml: string;
  readonly caPem?: string;
  writeKubeconfig(path: string): Promise<void>;
  /** Forget watch history, so a watch from an older resourceVersion gets 410 Expired. */
  compact(): void;
  /** Abruptly destroy every open watch socket. */
  dropWatches(): void;
  /**
   * Make every watch stream silent, open or opened later (a black-holed connection: no events, no bookmarks, no end),
   * while other requests are served as usual. resumeWatches() delivers what was held and stops holding.
   */
  holdWatches(): void;
  resumeWatches(): void;
  /** The next `count` requests matching get `status` with a Status body. */
  injectFault(f: Fault): void;
  requestLog(): readonly RequestLogEntry[];
  /** Number of watch streams currently open. */
  openWatches(): number;
  stop(): Promise<void>;
}

export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServerHandle> {
  const host = opts.host ?? '127.0.0.1';
  const core = new ApiCore(opts.historyLimit ?? 1000);
  if (opts.crdDir) await applyCrdDir(core, opts.crdDir);
  const tls = opts.tls ? generateServerTls(host === '127.0.0.1' || host === 'localhost' ? ['127.0.0.1', 'localhost'] : [host, '127.0.0.1', 'localhost']) : undefined;
  let url = '';
  const api = new ApiHttp(core, {
    token: opts.token,
    bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 5000,
    serverAddress: () => url.replace(/^https?:\/\//, ''),
  });
  const handler = api.handle.bind(api);
  const server: Server = tls ? createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, handler) : createHttpServer(handler);
  // Watches are long-lived; never let Node time them out under us.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  url = `${tls ? 'https' : 'http'}://${hostPart}:${addr.port}`;
  const kubeconfigYaml = buildKubeconfig(url, opts.token ?? 'sandbox-token', tls?.caPem);

  return {
    url,
    kubeconfigYaml,
    caPem: tls?.caPem,
    writeKubeconfig: (path) => writeFile(path, kubeconfigYaml, { mode: 0o600 }),
    compact: () => core.store.compact(),
    dropWatches: () => api.dropWatches(),
    holdWatches: () => api.holdWatches(),
    resumeWatches: () => api.resumeWatches(),
    injectFault: (f) => api.injectFault(f),
    requestLog: () => api.requestLog(),
    openWatches: () => api.watches.size,
    stop: async () => {
      for (const w of [...api.watches]) w.res.socket?.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

async function applyCrdDir(core: ApiCore, dir: string): Promise<void> {
  const crdType = core.registry.get('apiextensions.k8s.io', 'v1', 'customresourcedefinitions') as ResourceType;
  const files = (await readdir(dir)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
  for (const file of files) {
    const text = await readFile(join(dir, file), 'utf8');
    for (const doc of parseAllDocuments(text)) {
      const obj: unknown = doc.toJSON();
      if (!isObject(obj) || obj.kind !== 'CustomResourceDefinition') continue;
      try {
        core.create(crdType, undefined, obj as JsonObject, {});
      } catch (err) {
        throw new Error(`cannot apply CRD from ${join(dir, file)}`, { cause: err });
      }
    }
  }
}
