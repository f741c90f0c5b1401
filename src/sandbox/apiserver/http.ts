// The HTTP face of the emulator: routing of discovery, OpenAPI and resource paths onto ApiCore, content
// negotiation (JSON, Table), Status error bodies, watches, fault injection and the request log.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseYaml } from 'yaml';
import type { ApiCore, WriteOptions, WriteResult } from './core.js';
import {
  apiGroup, apiGroupList, apiResourceList, apiVersions, openApiV3GroupVersion, openApiV3Root, SERVER_VERSION,
} from './discovery.js';
import { ApiError, badRequest, methodNotAllowed, pathNotFound, unsupportedMediaType } from './errors.js';
import { DISCOVERY_PATH, JWKS_PATH, type ServiceAccountIssuer } from './issuer.js';
import type { Json, JsonObject } from './json.js';
import { PATCH_MEDIA_TYPES } from './patch.js';
import { decodeTokenRequestProtobuf, PROTOBUF_MEDIA_TYPE } from './protobuf.js';
import { apiVersionOf, type ResourceType } from './resources.js';
import { both, parseFieldSelector, parseLabelSelector, type Selector } from './selectors.js';
import { renderTable, type IncludeObject } from './table.js';
import { createServiceAccountToken, createTokenReview, type TokenRequestPolicy } from './tokenrequest.js';
import { serveWatch, type OpenWatch } from './watch.js';
import { errorMessage } from '../../common/errors.js';

export interface Fault {
  method?: string;
  pathPrefix: string;
  status: number;
  count: number;
  /** true: only watch requests; false: only non-watch requests; absent: both. */
  watch?: boolean;
}

export interface RequestLogEntry {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly status: number;
}

export interface HttpOptions {
  token: string | undefined;
  bookmarkIntervalMs: number;
  serverAddress: () => string;
  issuer: ServiceAccountIssuer;
  tokenPolicy: TokenRequestPolicy;
  now: () => number;
}

const MAX_BODY_BYTES = 3 * 1024 * 1024;
const MAX_LOG_ENTRIES = 100_000;

export class ApiHttp {
  readonly watches = new Set<OpenWatch>();
  private readonly faults: Fault[] = [];
  private watchesHeld = false;
  private log: { method: string; path: string; query: string; status: number }[] = [];

  constructor(private readonly core: ApiCore, private readonly opts: HttpOptions) {
    core.onResourceRemoved = (t) => {
      for (const w of [...this.watches]) if (w.type.group === t.group && w.type.plural === t.plural) w.end();
    };
  }

  injectFault(f: Fault): void {
    this.faults.push({ ...f });
  }

  requestLog(): readonly RequestLogEntry[] {
    return this.log.map((e) => ({ ...e }));
  }

  dropWatches(): void {
    for (const w of [...this.watches]) w.res.socket?.destroy();
  }

  /** Black-holes every watch stream, open or opened later: nothing reaches the client until resumeWatches(). */
  holdWatches(): void {
    this.watchesHeld = true;
  }

  /** Delivers what the held watches kept back, as a healed network partition would, and stops holding. */
  resumeWatches(): void {
    this.watchesHeld = false;
    for (const w of [...this.watches]) w.flush();
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://apiserver');
    const entry = { method: req.method ?? 'GET', path: url.pathname, query: url.search.replace(/^\?/, ''), status: 0 };
    this.log.push(entry);
    if (this.log.length > MAX_LOG_ENTRIES * 1.5) this.log = this.log.slice(-MAX_LOG_ENTRIES);
    const done = (): void => {
      if (entry.status === 0) entry.status = res.statusCode;
    };
    res.on('finish', done);
    res.on('close', done);
    this.route(req, res, url).then(
      () => {
        if (res.headersSent) entry.status = res.statusCode;
      },
      (err: unknown) => {
        const apiErr =
          err instanceof ApiError
            ? err
            : new ApiError(500, 'InternalError', `Internal error occurred: ${errorMessage(err)}`, {}, { cause: err });
        if (!res.headersSent) sendJson(res, apiErr.code, apiErr.toStatus(), [], apiErr.code === 429 ? { 'retry-after': '1' } : {});
        else res.destroy(apiErr);
      },
    );
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const q = url.searchParams;
    const isWatch = queryBool(q, 'watch');

    if (['/healthz', '/livez', '/readyz'].includes(path)) {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    // Issuer discovery is public, as clusters bind system:service-account-issuer-discovery for relying parties.
    if (method === 'GET' && (path === DISCOVERY_PATH || path === JWKS_PATH) && this.opts.issuer.servesDiscovery) {
      this.maybeFault(method, path, false);
      const body = path === DISCOVERY_PATH ? this.opts.issuer.discoveryDocument() : ((await this.opts.issuer.jwks()) as unknown as JsonObject);
      sendJson(res, 200, body, [], {
        'content-type': path === DISCOVERY_PATH ? 'application/json' : 'application/jwk-set+json',
        'cache-control': 'public, max-age=3600',
      });
      return;
    }
    if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
      throw new ApiError(401, 'Unauthorized', 'Unauthorized', {});
    }
    this.maybeFault(method, path, isWatch);

    if (method === 'GET') {
      const doc = this.discovery(path);
      if (doc) {
        sendJson(res, 200, doc, []);
        return;
      }
    }
    if (path.startsWith(AUTHENTICATION_GV_PATH)) {
      if (path === AUTHENTICATION_GV_PATH) {
        if (method !== 'GET') throw methodNotAllowed();
        sendJson(res, 200, authenticationResourceList(), []);
        return;
      }
      if (path !== `${AUTHENTICATION_GV_PATH}/tokenreviews`) throw pathNotFound();
      if (method !== 'POST') throw methodNotAllowed();
      send(res, await createTokenReview(this.core, this.opts.issuer, this.opts.tokenPolicy.apiAudiences, await readBody(req), this.opts.now()));
      return;
    }
    const segs = path.split('/').filter((s) => s.length > 0).map(decodeURIComponent);
    const target = this.resolve(segs);
    if (!target) throw pathNotFound();
    if (target.discovery) {
      if (method !== 'GET') throw methodNotAllowed();
      sendJson(res, 200, apiResourceList(this.core.registry, target.group, target.version), []);
      return;
    }
    await this.serveResource(req, res, q, method, isWatch, target);
  }

  private discovery(path: string): JsonObject | undefined {
    const reg = this.core.registry;
    if (path === '/version') return SERVER_VERSION;
    if (path === '/api') return apiVersions(this.opts.serverAddress());
    if (path === '/apis') return withAuthenticationGroup(apiGroupList(reg));
    if (path === `/apis/${AUTHENTICATION_GROUP}`) return apiGroup(AUTHENTICATION_GROUP, ['v1']);
    if (path === '/openapi/v3') return openApiV3Root(reg);
    const v3 = /^\/openapi\/v3\/(api\/([^/]+)|apis\/([^/]+)\/([^/]+))$/.exec(path);
    if (v3) {
      const group = v3[3] ?? '';
      const version = v3[2] ?? v3[4] ?? '';
      if (reg.inGroupVersion(group, version).length === 0) return undefined;
      return openApiV3GroupVersion(reg, group, version);
    }
    const g = /^\/apis\/([^/]+)$/.exec(path);
    if (g) {
      const versions = reg.groups().get(g[1] ?? '');
      return versions ? apiGroup(g[1] ?? '', versions) : undefined;
    }
    return undefined;
  }

  private resolve(segs: string[]): Target | undefined {
    let group: string;
    let version: string;
    let rest: string[];
    if (segs[0] === 'api' && segs.length >= 2) {
      group = '';
      version = segs[1] as string;
      rest = segs.slice(2);
    } else if (segs[0] === 'apis' && segs.length >= 3) {
      group = segs[1] as string;
      version = segs[2] as string;
      rest = segs.slice(3);
    } else return undefined;
    if (this.core.registry.inGroupVersion(group, version).length === 0) return undefined;
    if (rest.length === 0) return { discovery: true, group, version };
    let namespace: string | undefined;
    const nsSub = group === '' && rest.length === 3 && (rest[2] === 'status' || rest[2] === 'finalize');
    if (rest[0] === 'namespaces' && rest.length >= 3 && !nsSub) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    if (rest.length > 3) return undefined;
    const type = this.core.registry.get(group, version, rest[0] as string);
    if (!type) return undefined;
    if (namespace !== undefined && !type.namespaced) return undefined;
    const name = rest[1];
    const subresource = rest[2];
    const binding = subresource === 'binding' && type.group === '' && type.kind === 'Pod';
    const token = subresource === 'token' && type.group === '' && type.kind === 'ServiceAccount';
    if (subresource !== undefined && !(subresource === 'status' && type.statusSubresource) && !binding && !token) return undefined;
    return { discovery: false, group, version, type, namespace, name, subresource };
  }

  private async serveResource(
    req: IncomingMessage, res: ServerResponse, q: URLSearchParams, method: string, isWatch: boolean, target: ResourceTarget,
  ): Promise<void> {
    const { type: t, namespace, name, subresource } = target;
    const writeOpts: WriteOptions = { fieldValidation: fieldValidation(q.get('fieldValidation')), dryRun: q.getAll('dryRun').length > 0 };
    const table = tableRequest(req.headers.accept, q.get('includeObject'));
    if (name === undefined) {
      switch (method) {
        case 'GET': {
          const selector = this.selector(t, q);
          if (isWatch) {
            this.watch(res, t, namespace, selector, q);
            return;
          }
          const page = this.core.list(t, namespace, selector, parseLimit(q.get('limit')), q.get('continue') ?? undefined);
          const listMeta: JsonObject = { resourceVersion: page.resourceVersion };
          if (page.continueToken) listMeta.continue = page.continueToken;
          if (page.remaining !== undefined) listMeta.remainingItemCount = page.remaining;
          if (table) sendJson(res, 200, this.table(t, page.items, listMeta, table), []);
          else sendJson(res, 200, { apiVersion: apiVersionOf(t), kind: t.listKind, metadata: listMeta, items: page.items }, []);
          return;
        }
        case 'POST': {
          if (t.namespaced && namespace === undefined) throw methodNotAllowed();
          const body = await readBody(req);
          send(res, this.core.create(t, namespace, body, writeOpts));
          return;
        }
        case 'DELETE': {
          if (t.namespaced && namespace === undefined && t.kind !== 'Namespace') throw methodNotAllowed();
          const selector = this.selector(t, q);
          const listed = this.core.list(t, namespace, selector, 0, undefined);
          const options = withQueryDeleteOptions(await readBody(req, true), q);
          for (const obj of listed.items) {
            const m = obj.metadata as JsonObject;
            this.core.delete(t, typeof m.namespace === 'string' ? m.namespace : undefined, String(m.name), options);
          }
          // As the generic registry's DeleteCollection: the list as it was before the deletes.
          sendJson(res, 200, { apiVersion: apiVersionOf(t), kind: t.listKind, metadata: { resourceVersion: listed.resourceVersion }, items: listed.items }, []);
          return;
        }
        default:
          throw methodNotAllowed();
      }
    }
    if (t.namespaced && namespace === undefined) throw pathNotFound();
    if (subresource === 'binding') {
      if (method !== 'POST') throw methodNotAllowed();
      send(res, this.core.bindPod(t, namespace ?? '', name, await readBody(req)));
      return;
    }
    if (subresource === 'token') {
      if (method !== 'POST') throw methodNotAllowed();
      send(res, await createServiceAccountToken(this.core, this.opts.issuer, this.opts.tokenPolicy, namespace ?? '', name, await readBody(req, false, true)));
      return;
    }
    switch (method) {
      case 'GET': {
        if (isWatch) {
          const byName = parseFieldSelector(`metadata.name=${name}`, t.kind, Boolean(t.schema));
          this.watch(res, t, namespace, both(byName, this.selector(t, q)), q);
          return;
        }
        const obj = this.core.get(t, namespace, name);
        if (table) sendJson(res, 200, this.table(t, [obj], { resourceVersion: String((obj.metadata as JsonObject).resourceVersion) }, table), []);
        else sendJson(res, 200, obj, []);
        return;
      }
      case 'PUT': {
        const body = await readBody(req);
        send(res, this.core.update(t, namespace, name, body, subresource, writeOpts));
        return;
      }
      case 'PATCH': {
        const contentType = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
        const patchType = PATCH_MEDIA_TYPES[contentType];
        const accepted = Object.entries(PATCH_MEDIA_TYPES)
          .filter(([, p]) => (p !== 'strategic' || t.strategicMerge) && p !== 'apply')
          .map(([m]) => m);
        if (!patchType || patchType === 'apply' || (patchType === 'strategic' && !t.strategicMerge)) {
          throw unsupportedMediaType(contentType, accepted);
        }
        const body = await readBody(req);
        send(res, this.core.patch(t, namespace, name, patchType, body, subresource, writeOpts));
        return;
      }
      case 'DELETE': {
        if (subresource) throw methodNotAllowed();
        const body = await readBody(req, true);
        send(res, this.core.delete(t, namespace, name, withQueryDeleteOptions(body, q)));
        return;
      }
      default:
        throw methodNotAllowed();
    }
  }

  private watch(res: ServerResponse, t: ResourceType, namespace: string | undefined, selector: Selector, q: URLSearchParams): void {
    const rv = q.get('resourceVersion') ?? undefined;
    if (rv !== undefined && rv !== '' && !/^\d+$/.test(rv)) {
      throw new ApiError(400, 'BadRequest', `resourceVersion: Invalid value: "${rv}": must be a valid resourceVersion`);
    }
    const timeout = q.get('timeoutSeconds');
    serveWatch(
      this.core,
      {
        type: t,
        namespace,
        selector,
        resourceVersion: rv,
        allowBookmarks: queryBool(q, 'allowWatchBookmarks'),
        timeoutSeconds: timeout !== null && /^\d+$/.test(timeout) ? Number(timeout) : undefined,
        bookmarkIntervalMs: this.opts.bookmarkIntervalMs,
        held: () => this.watchesHeld,
      },
      res,
      this.watches,
    );
  }

  private selector(t: ResourceType, q: URLSearchParams): Selector {
    return both(parseLabelSelector(q.get('labelSelector')), parseFieldSelector(q.get('fieldSelector'), t.kind, Boolean(t.schema)));
  }

  private table(t: ResourceType, items: JsonObject[], listMeta: JsonObject, req: TableRequest): JsonObject {
    const tbl = renderTable(t.kind, t.schema ? (t.printerColumns ?? []) : undefined, items, listMeta, req.include, this.opts.now());
    tbl.apiVersion = `meta.k8s.io/${req.version}`;
    return tbl;
  }

  private maybeFault(method: string, path: string, isWatch: boolean): void {
    const idx = this.faults.findIndex(
      (f) =>
        f.count > 0 &&
        path.startsWith(f.pathPrefix) &&
        (f.method === undefined || f.method.toUpperCase() === method) &&
        (f.watch === undefined || f.watch === isWatch),
    );
    if (idx < 0) return;
    const f = this.faults[idx] as Fault;
    f.count -= 1;
    if (f.count === 0) this.faults.splice(idx, 1);
    throw new ApiError(f.status, reasonFor(f.status), `injected fault: ${f.status}`, f.status === 429 ? { retryAfterSeconds: 1 } : {});
  }
}

// authentication.k8s.io/v1 has no storage here: TokenReview only (TokenRequest lives under serviceaccounts).
const AUTHENTICATION_GROUP = 'authentication.k8s.io';
const AUTHENTICATION_GV_PATH = `/apis/${AUTHENTICATION_GROUP}/v1`;

function authenticationResourceList(): JsonObject {
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: `${AUTHENTICATION_GROUP}/v1`,
    resources: [{ name: 'tokenreviews', singularName: 'tokenreview', namespaced: false, kind: 'TokenReview', verbs: ['create'] }],
  };
}

function withAuthenticationGroup(list: JsonObject): JsonObject {
  const groups = Array.isArray(list.groups) ? [...list.groups] : [];
  groups.push(apiGroup(AUTHENTICATION_GROUP, ['v1']));
  return { ...list, groups };
}

interface DiscoveryTarget {
  discovery: true;
  group: string;
  version: string;
}
interface ResourceTarget {
  discovery: false;
  group: string;
  version: string;
  type: ResourceType;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}
type Target = DiscoveryTarget | ResourceTarget;

interface TableRequest {
  version: 'v1' | 'v1beta1';
  include: IncludeObject;
}

/** `Accept: application/json;as=Table;v=v1;g=meta.k8s.io, application/json` → Table (the first acceptable wins). */
function tableRequest(accept: string | undefined, includeObject: string | null): TableRequest | undefined {
  if (!accept) return undefined;
  for (const range of accept.split(',')) {
    const params = new Map<string, string>();
    const [type, ...rest] = range.split(';').map((s) => s.trim());
    for (const p of rest) {
      const [k, v] = p.split('=');
      if (k && v !== undefined) params.set(k.trim(), v.trim());
    }
    if (params.get('as') === 'Table' && params.get('g') === 'meta.k8s.io' && (type === 'application/json' || type === '*/*')) {
      const v = params.get('v');
      if (v === 'v1' || v === 'v1beta1') {
        const include: IncludeObject = includeObject === 'None' || includeObject === 'Object' ? includeObject : 'Metadata';
        return { version: v, include };
      }
    }
    if (!params.has('as') && (type === 'application/json' || type === '*/*')) return undefined;
  }
  return undefined;
}

/**
 * A boolean query parameter as the real API server reads it (apimachinery's Convert_Slice_string_To_bool): absent is
 * false, `0` and `false` in any case are false, anything else (`true`, `True` from the Python client, `1`, even an
 * empty value) is true.
 */
export function queryBool(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  if (v === null) return false;
  return v !== '0' && v.toLowerCase() !== 'false';
}

/** DeleteOptions come from the body or, as clients without a body send them, from the query (`?dryRun=All`). */
function withQueryDeleteOptions(body: Json, q: URLSearchParams): Json {
  const dryRun = q.getAll('dryRun');
  if (dryRun.length === 0) return body;
  const options: JsonObject = body !== null && typeof body === 'object' && !Array.isArray(body) ? { ...body } : {};
  if (!Array.isArray(options.dryRun) || options.dryRun.length === 0) options.dryRun = dryRun;
  return options;
}

function fieldValidation(v: string | null): WriteOptions['fieldValidation'] {
  return v === 'Strict' || v === 'Ignore' || v === 'Warn' ? v : undefined;
}

function parseLimit(v: string | null): number {
  if (v === null || v === '') return 0;
  const n = Number(v);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

function reasonFor(status: number): string {
  const reasons: Record<number, string> = {
    400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed',
    409: 'Conflict', 410: 'Expired', 422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError',
    503: 'ServiceUnavailable', 504: 'Timeout',
  };
  return reasons[status] ?? 'Unknown';
}

/** The body as JSON (or YAML); `protobufTokenRequest`: also the protobuf TokenRequest that kubectl's typed client sends. */
async function readBody(req: IncomingMessage, optional = false, protobufTokenRequest = false): Promise<Json> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > MAX_BODY_BYTES) throw new ApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728');
    chunks.push(b);
  }
  const raw = Buffer.concat(chunks);
  const contentType = (req.headers['content-type'] ?? '').toLowerCase();
  if (contentType.split(';')[0]?.trim() === PROTOBUF_MEDIA_TYPE) {
    if (!protobufTokenRequest) throw unsupportedMediaType(contentType, ['application/json', 'application/yaml']);
    return decodeTokenRequestProtobuf(raw);
  }
  const text = raw.toString('utf8');
  if (text.trim() === '') {
    if (optional) return null;
    throw badRequest('the body of the request was empty');
  }
  try {
    if (contentType.includes('yaml')) return parseYaml(text) as Json;
    return JSON.parse(text) as Json;
  } catch (err) {
    throw new ApiError(400, 'BadRequest', `the object provided is unrecognized: ${errorMessage(err)}`, undefined, { cause: err });
  }
}

function send(res: ServerResponse, r: WriteResult): void {
  sendJson(res, r.status, r.body, r.warnings);
}

function sendJson(res: ServerResponse, status: number, body: JsonObject, warnings: readonly string[], extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | string[]> = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-cache, private',
    ...extra,
  };
  if (warnings.length > 0) headers.warning = warnings.map((w) => `299 - ${JSON.stringify(w)}`);
  res.writeHead(status, headers);
  res.end(text);
}
