// startApiServer: the Kubernetes API emulator on a real HTTP(S) socket, with test hooks.

import { readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { parseAllDocuments } from 'yaml';
import type { JWK } from 'jose';
import { realClock, type Clock } from '../../common/clock.js';
import { ApiCore } from './core.js';
import { ApiHttp, type Fault, type RequestLogEntry } from './http.js';
import { isObject, type JsonObject } from './json.js';
import { JWKS_PATH, ServiceAccountIssuer, type ServiceAccountTokenPayload } from './issuer.js';
import { buildKubeconfig } from './kubeconfig.js';
import type { ResourceType } from './resources.js';
import { generateServerTls } from './tls.js';
import { reviewServiceAccountToken, type ReviewResult } from './tokenrequest.js';

export type { Fault, RequestLogEntry } from './http.js';
export type { KubernetesClaim, ServiceAccountTokenPayload } from './issuer.js';
export type { ReviewResult } from './tokenrequest.js';

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
  /** `--service-account-issuer`: the tokens' `iss` and the discovery document's `issuer`; default the emulator's own URL. */
  serviceAccountIssuer?: string;
  /** `--service-account-jwks-uri`; default `<emulator URL>/openid/v1/jwks`. */
  serviceAccountJwksUri?: string;
  /** `--api-audiences`: what a TokenRequest without audiences gets; default `[issuer]`. */
  apiAudiences?: readonly string[];
  /** `--service-account-max-token-expiration` in seconds (longer requests are shortened, with a warning); default none. */
  serviceAccountMaxTokenExpirationSeconds?: number;
  /** `--service-account-signing-key-file` as a key: RSA private key; default a fresh 2048-bit key per start. */
  serviceAccountSigningKey?: KeyObject;
  /** Time for timestamps and tokens (iat/nbf/exp, expirationTimestamp) and for reviewing them. */
  clock?: Clock;
}

/** The service-account issuer of a running emulator, for tests and the sandbox (what a relying party would fetch). */
export interface ServiceAccountIssuerHandle {
  /** The exact `iss` of every token (copy it, never re-type it). */
  readonly issuer: string;
  readonly jwksUri: string;
  /** Whether `/.well-known/openid-configuration` and `/openid/v1/jwks` are served (issuer is https, as the real server requires). */
  readonly servesDiscovery: boolean;
  readonly apiAudiences: readonly string[];
  /** `{keys: [RSA public JWK with kid, alg RS256, use sig], …}`, as `/openid/v1/jwks` serves it (newest first). */
  jwks(): Promise<{ keys: JWK[] }>;
  /** The kid of the key that signs new tokens. */
  kid(): Promise<string>;
  /** That key's public half as PEM (SPKI). */
  publicKeyPem(): Promise<string>;
  /**
   * Rotate the signing key: new tokens carry the new kid; `keepPrevious` (default true) keeps the old keys published
   * and verifying, as AKS does for 24 h; false drops them (tokens they signed stop verifying).
   */
  rotateSigningKey(opts?: { keepPrevious?: boolean; key?: KeyObject }): Promise<void>;
  /** Signature, issuer, time and (when given) audience; throws on failure. Ignores whether bound objects still exist. */
  verify(token: string, audience?: string): Promise<ServiceAccountTokenPayload>;
  /** The TokenReview verdict: verify() plus the service account and bound pod/secret still existing with their uids. */
  review(token: string, audiences?: readonly string[]): Promise<ReviewResult>;
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
  readonly serviceAccountIssuer: ServiceAccountIssuerHandle;
  /** Number of watch streams currently open. */
  openWatches(): number;
  stop(): Promise<void>;
}

export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServerHandle> {
  const host = opts.host ?? '127.0.0.1';
  const clock = opts.clock ?? realClock;
  const core = new ApiCore(opts.historyLimit ?? 1000, () => clock.now());
  if (opts.crdDir) await applyCrdDir(core, opts.crdDir);
  const tls = opts.tls ? generateServerTls(host === '127.0.0.1' || host === 'localhost' ? ['127.0.0.1', 'localhost'] : [host, '127.0.0.1', 'localhost']) : undefined;
  let url = '';
  let http: ApiHttp | undefined;
  const handler = (req: Parameters<ApiHttp['handle']>[0], res: Parameters<ApiHttp['handle']>[1]): void => {
    if (http) http.handle(req, res);
    else res.writeHead(503, { 'retry-after': '1' }).end();
  };
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
  // The issuer URL defaults to the listening address, which is known only now.
  const issuerUrl = opts.serviceAccountIssuer ?? url;
  let issuer: ServiceAccountIssuer;
  try {
    issuer = new ServiceAccountIssuer({ issuer: issuerUrl, jwksUri: opts.serviceAccountJwksUri ?? `${url}${JWKS_PATH}`, clock, signingKey: opts.serviceAccountSigningKey });
  } catch (err) {
    server.close();
    throw err;
  }
  const apiAudiences = opts.apiAudiences && opts.apiAudiences.length > 0 ? [...opts.apiAudiences] : [issuerUrl];
  const api = new ApiHttp(core, {
    token: opts.token,
    bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 5000,
    serverAddress: () => url.replace(/^https?:\/\//, ''),
    issuer,
    tokenPolicy: { apiAudiences, maxExpirationSeconds: opts.serviceAccountMaxTokenExpirationSeconds ?? 0 },
    now: () => clock.now(),
  });
  http = api;
  const serviceAccountIssuer: ServiceAccountIssuerHandle = {
    issuer: issuer.issuer,
    jwksUri: issuer.jwksUri,
    servesDiscovery: issuer.servesDiscovery,
    apiAudiences,
    jwks: () => issuer.jwks(),
    kid: () => issuer.kid(),
    publicKeyPem: () => issuer.publicKeyPem(),
    rotateSigningKey: (o) => issuer.rotate(o),
    verify: (token, audience) => issuer.verify(token, audience),
    review: (token, audiences) => reviewServiceAccountToken(core, issuer, token, audiences ?? apiAudiences, clock.now()),
  };
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
    serviceAccountIssuer,
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
