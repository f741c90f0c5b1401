// --namespace-identity-policy on MIC and NMI: off by default (the original's behaviour), enforce, and nothing else.
import { describe, expect, it } from 'vitest';
import { parseMicConfig } from '../../src/mic/config.js';
import { parseNmiConfig } from '../../src/nmi/config.js';

const parsers = {
  mic: (argv: string[]) => parseMicConfig(argv, { MIC_POD_NAMESPACE: 'kube-system', HOSTNAME: 'mic-0' }),
  nmi: (argv: string[]) => parseNmiConfig(argv, { NODE_NAME: 'aks-nodepool1-0' }),
};

describe.each(Object.entries(parsers))('%s --namespace-identity-policy', (_name, parse) => {
  it('defaults to off', () => {
    const r = parse([]);
    expect(r.ok && r.value.namespaceIdentityPolicy).toBe('off');
  });

  it('accepts enforce', () => {
    const r = parse(['--namespace-identity-policy=enforce']);
    expect(r.ok && r.value.namespaceIdentityPolicy).toBe('enforce');
  });

  it('refuses any other value with a clear error', () => {
    const r = parse(['--namespace-identity-policy=on']);
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.errors.join('\n')).toContain("--namespace-identity-policy: expected one of off, enforce, got 'on'");
  });
});
