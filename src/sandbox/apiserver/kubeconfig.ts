// A kubeconfig for the emulator: one cluster, one bearer-token user, one current context.

import { stringify } from 'yaml';

export function buildKubeconfig(url: string, token: string, caPem: string | undefined): string {
  const cluster: Record<string, unknown> = { server: url };
  // client-node refuses plain http unless TLS verification is explicitly off.
  if (caPem) cluster['certificate-authority-data'] = Buffer.from(caPem).toString('base64');
  else cluster['insecure-skip-tls-verify'] = true;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'sandbox', cluster }],
    users: [{ name: 'sandbox-user', user: { token } }],
    contexts: [{ name: 'sandbox', context: { cluster: 'sandbox', user: 'sandbox-user', namespace: 'default' } }],
    'current-context': 'sandbox',
    preferences: {},
  });
}
