// Raw LIST through client-node's auth and TLS setup: the response stays plain JSON (typed list calls would turn
// timestamps into Dates and rename fields), so listed objects look exactly like watched ones.
import { ApiException } from '@kubernetes/client-node/dist/gen/apis/exception.js';
import { HttpMethod, RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';
import type { KubeAccess } from './access.js';
import { fetch } from 'undici';
import type { KubeObject } from './store.js';

export interface ListOptions {
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** Page size (`limit`); the server may return fewer items and a `continue` token. */
  readonly limit?: number;
  readonly continue?: string;
  /** `resourceVersion` for the list; omitted means a consistent (quorum) read. */
  readonly resourceVersion?: string;
  readonly signal?: AbortSignal;
}

export interface ListPage<T> {
  readonly items: T[];
  readonly resourceVersion: string;
  /** Token for the next page; empty or undefined on the last page. */
  readonly continue?: string;
}

/** Lists one page of the collection at `path` (e.g. `/api/v1/pods`). Non-2xx answers throw `ApiException`. */
export async function listPage<T extends KubeObject>(kc: KubeAccess, path: string, opts: ListOptions = {}): Promise<ListPage<T>> {
  const body = await getJson(kc, path, {
    labelSelector: opts.labelSelector,
    fieldSelector: opts.fieldSelector,
    limit: opts.limit,
    continue: opts.continue,
    resourceVersion: opts.resourceVersion,
  }, opts.signal);
  return parseListBody<T>(body, path);
}

/** Lists every page and returns all items with the resourceVersion of the last page. */
export async function listAll<T extends KubeObject>(kc: KubeAccess, path: string, opts: ListOptions = {}): Promise<ListPage<T>> {
  const items: T[] = [];
  let cont: string | undefined;
  for (;;) {
    const page = await listPage<T>(kc, path, { ...opts, continue: cont });
    items.push(...page.items);
    if (!page.continue) return { items, resourceVersion: page.resourceVersion };
    cont = page.continue;
  }
}

/** GET `path` with query parameters through the KubeConfig's authentication; returns the parsed JSON body. */
export async function getJson(
  kc: KubeAccess,
  path: string,
  query: Readonly<Record<string, string | number | boolean | undefined>> = {},
  signal?: AbortSignal,
): Promise<unknown> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  const ctx = new RequestContext(url.toString(), HttpMethod.GET);
  await kc.applySecurityAuthentication(ctx);
  ctx.setHeaderParam('Accept', 'application/json');
  const res = await fetch(url, { method: 'GET', headers: ctx.getHeaders(), dispatcher: ctx.getDispatcher(), signal });
  const text = await res.text();
  if (res.status < 200 || res.status > 299) {
    const headers: Record<string, string> = {};
    res.headers.forEach((v, k) => {
      headers[k] = v;
    });
    throw new ApiException<string>(res.status, `HTTP-Code: ${res.status}\nGET ${path}\nBody: ${text}`, text, headers);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new Error(`GET ${path}: response is not JSON`, { cause: err });
  }
}

function parseListBody<T>(body: unknown, path: string): ListPage<T> {
  if (!isRecord(body) || !Array.isArray(body.items)) throw new Error(`GET ${path}: response is not a list`);
  const meta = isRecord(body.metadata) ? body.metadata : {};
  const rv = typeof meta.resourceVersion === 'string' ? meta.resourceVersion : '';
  const cont = typeof meta.continue === 'string' && meta.continue !== '' ? meta.continue : undefined;
  // Items of a list carry no apiVersion/kind on the wire; fill them from the list's kind so consumers can tell.
  const itemKind = typeof body.kind === 'string' && body.kind.endsWith('List') ? body.kind.slice(0, -4) : undefined;
  const apiVersion = typeof body.apiVersion === 'string' ? body.apiVersion : undefined;
  const items = (body.items as unknown[]).filter(isRecord).map((item) => {
    if (item.kind === undefined && itemKind) item.kind = itemKind;
    if (item.apiVersion === undefined && apiVersion) item.apiVersion = apiVersion;
    return item as T;
  });
  return { items, resourceVersion: rv, continue: cont };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}
