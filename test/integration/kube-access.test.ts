import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { loadKubeAccess } from '../../src/kube/access.js';
import { getJson } from '../../src/kube/list.js';

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function echoServer(): Promise<{ url: string; seen: IncomingHttpHeaders[] }> {
  const seen: IncomingHttpHeaders[] = [];
  const srv = createServer((req, res) => {
    seen.push(req.headers);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] }));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, seen };
}

function kubeconfig(url: string, user: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    `clusters: [{name: c, cluster: {server: "${url}", insecure-skip-tls-verify: true}}]`,
    `users: [{name: u, user: ${user}}]`,
    'contexts: [{name: x, context: {cluster: c, user: u}}]',
    'current-context: x',
  ].join('\n');
}

function workDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kube-access-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('loadKubeAccess (kubeconfig without client-node KubeConfig)', () => {
  it('sends the token and User-Agent on raw GETs and on client-node watches', async () => {
    const { url, seen } = await echoServer();
    const kc = loadKubeAccess({ kubeconfigYaml: kubeconfig(url, '{token: t}'), userAgent: 'aad-pod-identity/test' });
    expect(kc.getCurrentCluster()?.server).toBe(url);
    await getJson(kc, '/api/v1/namespaces');
    await new Promise<void>((resolve) => {
      void new Watch(kc as KubeConfig).watch('/api/v1/namespaces', {}, () => undefined, () => resolve());
    });
    expect(seen.map((h) => h['user-agent'])).toEqual(['aad-pod-identity/test', 'aad-pod-identity/test']);
    expect(seen.every((h) => h.authorization === 'Bearer t')).toBe(true);
  });

  it('reads a token file relative to the kubeconfig file', async () => {
    const { url, seen } = await echoServer();
    const dir = workDir();
    writeFileSync(join(dir, 'token'), 'from-file\n');
    writeFileSync(join(dir, 'config'), kubeconfig(url, '{tokenFile: token}'));
    await getJson(loadKubeAccess({ kubeconfigPath: join(dir, 'config') }), '/api/v1/namespaces');
    expect(seen[0]?.authorization).toBe('Bearer from-file');
  });

  it('runs an exec plugin once for concurrent requests and uses its token', async () => {
    const { url, seen } = await echoServer();
    const dir = workDir();
    const plugin = join(dir, 'plugin.sh');
    writeFileSync(plugin, `#!/bin/sh\necho run >> "${join(dir, 'runs')}"\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"exec-'"$EXTRA"'"}}'\n`);
    chmodSync(plugin, 0o755);
    const user = `{exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin.sh, env: [{name: EXTRA, value: ok}]}}`;
    writeFileSync(join(dir, 'config'), kubeconfig(url, user));
    const kc = loadKubeAccess({ kubeconfigPath: join(dir, 'config'), env: { PATH: '/usr/bin:/bin' } });
    await Promise.all([getJson(kc, '/api/v1/namespaces'), getJson(kc, '/api/v1/namespaces')]);
    expect(seen.map((h) => h.authorization)).toEqual(['Bearer exec-ok', 'Bearer exec-ok']);
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(join(dir, 'runs'), 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('fails with a cause for a missing file, and says what to use instead of an auth-provider', () => {
    expect(() => loadKubeAccess({ kubeconfigPath: '/nonexistent/kubeconfig' })).toThrow(/cannot load kubeconfig/);
    let err: unknown;
    try {
      loadKubeAccess({ kubeconfigYaml: kubeconfig('https://127.0.0.1:1', '{auth-provider: {name: azure}}') });
    } catch (e) {
      err = e;
    }
    expect(((err as Error).cause as Error).message).toMatch(/auth-provider .*exec plugin/);
  });
});
