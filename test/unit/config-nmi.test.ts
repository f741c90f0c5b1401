import { describe, expect, it } from 'vitest';
import { NMI_FLAGS, nmiUsage, parseNmiConfig, type NmiConfig } from '../../src/nmi/config.js';

const ENV = { NODE_NAME: 'aks-nodepool1-0' };

function config(argv: string[], env: Record<string, string | undefined> = ENV): NmiConfig {
  const r = parseNmiConfig(argv, env);
  if (!r.ok) throw new Error(`unexpected errors: ${r.errors.join('; ')}`);
  return r.value;
}
function errors(argv: string[], env: Record<string, string | undefined> = ENV): readonly string[] {
  const r = parseNmiConfig(argv, env);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}

describe('parseNmiConfig', () => {
  it('keeps every default of the original NMI (v1.8.17 cmd/nmi/main.go)', () => {
    const c = config([]);
    expect(c).toMatchObject({
      nmiListenAddress: '127.0.0.1',
      nmiPort: 2579,
      metadataIp: '169.254.169.254',
      metadataPort: 80,
      node: 'aks-nodepool1-0',
      iptUpdateIntervalMs: 60_000,
      forceNamespaced: false,
      // The original's 'default' let any editor of that namespace pass as MIC: no MIC namespace unless one is given.
      micNamespace: '',
      micServiceAccount: 'aad-pod-identity-mic',
      httpProbePort: 8080,
      retryAttemptsForCreated: 16,
      retryAttemptsForAssigned: 4,
      findIdentityRetryIntervalMs: 5000,
      enableProfile: false,
      enableScaleFeatures: true,
      blockInstanceMetadata: false,
      metadataHeaderRequired: true,
      prometheusPort: 9090,
      operationMode: 'standard',
      allowNetworkPluginKubenet: false,
      kubeletConfig: '/etc/default/kubelet',
      setRetryAfterHeader: false,
      enableConntrackDeletion: false,
      customUserAgent: '',
      logFormat: 'text',
      version: false,
    });
    // Ours.
    expect(c.imdsEndpoint).toBe('http://169.254.169.254:80');
    expect(c.iptablesBinary).toBe('iptables');
    expect(c.kubeconfig).toBeUndefined();
    expect(c.prefetch).toBe(true);
    expect(c.tokenCacheSize).toBe(10_000);
    expect(c.tokenRefreshBeforeMs).toBe(300_000);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('--token-cache-size=0 turns the token cache off (accepted; negative sizes are not)', () => {
    expect(config(['--node=n', '--token-cache-size=0']).tokenCacheSize).toBe(0);
    expect(errors(['--node=n', '--token-cache-size=-1'])).toEqual(["--token-cache-size: expected a non-negative integer, got '-1'"]);
  });

  it("accepts klog's --vmodule, --log_backtrace_at, --log_file_max_size, --one_output, --skip_log_headers (reported for the warning)", () => {
    const c = config(['--node=n', '--vmodule=nmi=5', '--log_backtrace_at=x.go:2', '--log_file_max_size=0', '--one_output=true', '--skip_log_headers']);
    expect(c.ignoredFlags).toEqual(['--log_backtrace_at', '--log_file_max_size', '--one_output', '--skip_log_headers', '--vmodule']);
  });

  it("accepts the original DaemonSet's and chart's arguments", () => {
    const c = config([
      '--node=node-1',
      '--http-probe-port=8085',
      '--enableScaleFeatures=true',
      '--metadata-header-required=true',
      '--ipt-update-interval-sec=60',
      '--MICNamespace=kube-system',
      '--mic-service-account=aad-pod-id-mic-service-account',
      '--retry-attempts-for-created=16',
      '--retry-attempts-for-assigned=4',
      '--find-identity-retry-interval=5',
      '--prometheus-port=9090',
      '--block-instance-metadata=false',
      '--allow-network-plugin-kubenet=false',
      '--kubelet-config=/etc/default/kubelet',
      '--set-retry-after-header=false',
      '--enable-conntrack-deletion=false',
      '--v=0',
      '--logtostderr',
    ]);
    expect(c.node).toBe('node-1');
    expect(c.httpProbePort).toBe(8085);
    expect(c.micNamespace).toBe('kube-system');
    expect(c.micServiceAccount).toBe('aad-pod-id-mic-service-account');
  });

  it('refuses managed mode outside namespaced mode, with the fix in the message', () => {
    expect(errors(['--operation-mode=managed'])).toEqual([
      '--operation-mode=managed requires namespaced mode: add --forceNamespaced (or env FORCENAMESPACED=true)',
    ]);
    expect(config(['--operation-mode=Managed', '--forceNamespaced']).operationMode).toBe('managed');
    expect(config(['--operation-mode=managed'], { ...ENV, FORCENAMESPACED: 'true' }).forceNamespaced).toBe(true);
  });

  it('requires the node name', () => {
    expect(errors([], {})).toEqual([
      '--node is required: pass --node=$(NODE_NAME) with NODE_NAME from fieldRef spec.nodeName, or set env NODE_NAME',
    ]);
    expect(config(['--node=n2']).node).toBe('n2');
  });

  it('sends its own IMDS calls to the intercepted address unless --imds-endpoint says otherwise', () => {
    expect(config(['--metadata-ip=169.254.169.250', '--metadata-port=8080']).imdsEndpoint).toBe('http://169.254.169.250:8080');
    const c = config(['--imds-endpoint=https://127.0.0.1:40123/']);
    expect(c.imdsEndpoint).toBe('https://127.0.0.1:40123');
    expect(c.metadataIp).toBe('169.254.169.254');
    expect(errors(['--imds-endpoint=ftp://x'])).toEqual(["--imds-endpoint: expected an absolute http or https URL, got 'ftp://x'"]);
  });

  it('takes short retry intervals as durations for tests, and whole seconds as the original', () => {
    expect(config(['--find-identity-retry-interval=50ms', '--ipt-update-interval-sec=200ms'])).toMatchObject({
      findIdentityRetryIntervalMs: 50,
      iptUpdateIntervalMs: 200,
    });
    expect(config(['--ipt-update-interval-sec=30']).iptUpdateIntervalMs).toBe(30_000);
    expect(errors(['--ipt-update-interval-sec=0'])).toEqual([
      "--ipt-update-interval-sec: expected a duration of at least 1ms, got '0'",
    ]);
  });

  it('parses the credential policy flags: off and empty by default, authorities as https origins', () => {
    expect(config([]).allowCrossNamespaceSecrets).toBe(false);
    expect(config([]).allowedAdEndpoints).toEqual([]);
    const c = config(['--allow-cross-namespace-secrets', '--allowed-ad-endpoints=https://ADFS.example/adfs/, https://127.0.0.1:8443']);
    expect(c.allowCrossNamespaceSecrets).toBe(true);
    expect(c.allowedAdEndpoints).toEqual(['https://adfs.example', 'https://127.0.0.1:8443']);
    expect(errors(['--allowed-ad-endpoints=http://adfs.example'])).toEqual(['--allowed-ad-endpoints: "http://adfs.example" does not use https']);
    expect(errors(['--allowed-ad-endpoints=https://u:p@adfs.example'])).toEqual(['--allowed-ad-endpoints: an authority URL must not carry user information']);
  });

  it('validates addresses', () => {
    expect(errors(['--metadata-ip=metadata'])).toEqual(["--metadata-ip: expected an IPv4 address, got 'metadata'"]);
    expect(errors(['--nmi-listen-address=::1'])).toEqual(["--nmi-listen-address: expected an IPv4 address, got '::1'"]);
    expect(config(['--nmi-listen-address=0.0.0.0']).nmiListenAddress).toBe('0.0.0.0');
  });

  it('lets --help and --version through without a node', () => {
    const help = parseNmiConfig(['-help'], {});
    expect(help.ok && help.value.help).toBe(true);
  });

  it('documents every flag in --help', () => {
    const text = nmiUsage();
    for (const def of Object.values(NMI_FLAGS)) expect(text).toContain(`--${def.name}`);
  });
});

describe('fail-closed flags', () => {
  it('runs --uninstall-iptables without --node, and keeps the rules otherwise', () => {
    expect(config([]).uninstallIptables).toBe(false);
    expect(config(['--uninstall-iptables'], {}).uninstallIptables).toBe(true);
    expect(errors([], {}).join('\n')).toContain('--node is required');
  });

  it('removes the startup taint aadpodidentity.k8s.io/nmi-not-ready by default; empty disables; a key only', () => {
    expect(config([]).startupTaint).toBe('aadpodidentity.k8s.io/nmi-not-ready');
    expect(config(['--startup-taint=']).startupTaint).toBe('');
    expect(config(['--startup-taint=example.com/nmi']).startupTaint).toBe('example.com/nmi');
    for (const bad of ['aadpodidentity.k8s.io/nmi-not-ready:NoSchedule', 'k=v', 'Upper.Case/x', '/x', 'a/b/c', `x/${'a'.repeat(64)}`]) {
      expect(errors([`--startup-taint=${bad}`]).join('\n'), bad).toContain('--startup-taint: expected a taint key');
    }
  });
});

describe('parseNmiConfig: tenant fairness and pod-view freshness (issue 10 items 8 and 10)', () => {
  it('has bounded defaults', () => {
    expect(config([])).toMatchObject({
      podViewMaxStalenessMs: 120_000,
      maxWaitingRequestsPerPod: 1024,
      maxWaitingRequests: 2048,
      maxConcurrentTokenFetches: 16,
      podTokenMissRate: 10,
      podTokenMissBurst: 20,
      maxConnectionsPerPod: 1024,
      maxConnections: 8192,
    });
  });

  it('parses the flags', () => {
    expect(
      config([
        '--pod-view-max-staleness=90s',
        '--max-waiting-requests-per-pod=64',
        '--max-waiting-requests=512',
        '--max-concurrent-token-fetches=4',
        '--pod-token-miss-rate=0.5',
        '--pod-token-miss-burst=5',
      ]),
    ).toMatchObject({
      podViewMaxStalenessMs: 90_000,
      maxWaitingRequestsPerPod: 64,
      maxWaitingRequests: 512,
      maxConcurrentTokenFetches: 4,
      podTokenMissRate: 0.5,
      podTokenMissBurst: 5,
    });
    expect(config(['--pod-token-miss-rate=0']).podTokenMissRate).toBe(0);
  });

  it('refuses values that would disable the bounds or make no sense, naming the flag', () => {
    expect(errors(['--pod-view-max-staleness=100ms']).join('\n')).toContain('pod-view-max-staleness');
    expect(errors(['--pod-token-miss-rate=-1']).join('\n')).toContain('--pod-token-miss-rate');
    expect(errors(['--max-waiting-requests=0']).join('\n')).toContain('max-waiting-requests');
    expect(errors(['--max-concurrent-token-fetches=0']).join('\n')).toContain('max-concurrent-token-fetches');
    expect(errors(['--pod-token-miss-burst=0']).join('\n')).toContain('pod-token-miss-burst');
    expect(errors(['--max-connections-per-pod=0']).join('\n')).toContain('max-connections-per-pod');
  });
});

describe('parseNmiConfig: the audit trail (issue 14 item 5)', () => {
  it('is on by default: aggregated, flushed every 10 s, to stdout', () => {
    expect(config([])).toMatchObject({ auditLog: 'aggregate', auditFlushIntervalMs: 10_000, auditLogFile: '' });
  });

  it('parses --audit-log, --audit-flush-interval and --audit-log-file', () => {
    expect(config(['--audit-log=off']).auditLog).toBe('off');
    expect(config(['--audit-log=ALL']).auditLog).toBe('all');
    expect(config(['--audit-log', 'aggregate']).auditLog).toBe('aggregate');
    expect(config(['--audit-flush-interval=1m']).auditFlushIntervalMs).toBe(60_000);
    expect(config(['--audit-log-file=/var/log/nmi/audit.jsonl']).auditLogFile).toBe('/var/log/nmi/audit.jsonl');
  });

  it('refuses an unknown mode and a flush interval too short to aggregate, naming the flag', () => {
    expect(errors(['--audit-log=sampled']).join('\n')).toContain('--audit-log');
    expect(errors(['--audit-flush-interval=10ms']).join('\n')).toContain('--audit-flush-interval');
  });
});
