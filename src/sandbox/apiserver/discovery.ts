// Discovery documents (legacy, unaggregated form) and the minimal OpenAPI v3 that kubectl reads to learn
// that the server validates fields itself (`fieldValidation`), so it skips client-side schema validation.

import { createHash } from 'node:crypto';
import type { JsonObject } from './json.js';
import { apiVersionOf, type Registry, type ResourceType } from './resources.js';

export const SERVER_VERSION: JsonObject = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.0-sandbox',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2026-01-01T00:00:00Z',
  goVersion: 'go1.23.0',
  compiler: 'gc',
  platform: 'linux/amd64',
};

export function apiVersions(serverAddress: string): JsonObject {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

export function apiGroupList(registry: Registry): JsonObject {
  const groups: JsonObject[] = [];
  for (const [group, versions] of registry.groups()) if (group !== '') groups.push(apiGroup(group, versions));
  return { kind: 'APIGroupList', apiVersion: 'v1', groups };
}

export function apiGroup(group: string, versions: readonly string[]): JsonObject {
  const gv = versions.map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { kind: 'APIGroup', apiVersion: 'v1', name: group, versions: gv, preferredVersion: gv[0] ?? null };
}

export function apiResourceList(registry: Registry, group: string, version: string): JsonObject {
  const resources: JsonObject[] = [];
  for (const t of registry.inGroupVersion(group, version)) {
    const r: JsonObject = {
      name: t.plural,
      singularName: t.singular,
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: [...t.verbs],
    };
    if (t.shortNames.length > 0) r.shortNames = [...t.shortNames];
    if (t.categories.length > 0) r.categories = [...t.categories];
    resources.push(r);
    if (t.statusSubresource) {
      resources.push({ name: `${t.plural}/status`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['get', 'patch', 'update'] });
    }
    if (t.group === '' && t.kind === 'ServiceAccount') {
      resources.push({ name: 'serviceaccounts/token', singularName: '', namespaced: true, group: 'authentication.k8s.io', version: 'v1', kind: 'TokenRequest', verbs: ['create'] });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf({ group, version }), resources };
}

/** `/openapi/v3`: one entry per group/version, addressed by a content hash as the real server does. */
export function openApiV3Root(registry: Registry): JsonObject {
  const paths: JsonObject = {};
  for (const [group, versions] of registry.groups()) {
    for (const version of versions) {
      const path = gvPath(group, version);
      const hash = createHash('sha512').update(JSON.stringify(openApiV3GroupVersion(registry, group, version))).digest('hex').toUpperCase();
      paths[path] = { serverRelativeURL: `/openapi/v3/${path}?hash=${hash}` };
    }
  }
  return { paths };
}

export function gvPath(group: string, version: string): string {
  return group === '' ? `api/${version}` : `apis/${group}/${version}`;
}

/** Paths only (no component schemas): enough for kubectl's query-parameter and patch-type checks. */
export function openApiV3GroupVersion(registry: Registry, group: string, version: string): JsonObject {
  const paths: JsonObject = {};
  for (const t of registry.inGroupVersion(group, version)) {
    const gvk = { group: t.group, version: t.version, kind: t.kind };
    const base = `/${gvPath(group, version)}/${t.namespaced ? 'namespaces/{namespace}/' : ''}${t.plural}`;
    const patchTypes = ['application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml'];
    if (t.strategicMerge) patchTypes.push('application/strategic-merge-patch+json');
    paths[base] = {
      get: operation(t, 'list', gvk, ['labelSelector', 'fieldSelector', 'limit', 'continue', 'watch', 'resourceVersion']),
      post: operation(t, 'create', gvk, ['dryRun', 'fieldManager', 'fieldValidation']),
    };
    paths[`${base}/{name}`] = {
      get: operation(t, 'read', gvk, []),
      put: operation(t, 'replace', gvk, ['dryRun', 'fieldManager', 'fieldValidation']),
      patch: {
        ...operation(t, 'patch', gvk, ['dryRun', 'fieldManager', 'fieldValidation', 'force']),
        requestBody: { content: Object.fromEntries(patchTypes.map((p) => [p, { schema: { type: 'object' } }])), required: true },
      },
      delete: operation(t, 'delete', gvk, ['dryRun', 'gracePeriodSeconds', 'propagationPolicy']),
    };
  }
  return { openapi: '3.0.0', info: { title: 'Kubernetes', version: 'v1.32.0' }, paths, components: { schemas: {} } };
}

function operation(t: ResourceType, verb: string, gvk: JsonObject, queryParams: readonly string[]): JsonObject {
  return {
    operationId: `${verb}${t.kind}`,
    'x-kubernetes-action': verb === 'read' ? 'get' : verb === 'replace' ? 'put' : verb,
    'x-kubernetes-group-version-kind': gvk,
    parameters: queryParams.map((name) => ({ name, in: 'query', schema: { type: 'string', uniqueItems: true } })),
    responses: { '200': { description: 'OK' } },
  };
}
