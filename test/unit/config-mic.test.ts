import { describe, expect, it } from 'vitest';
import { MIC_FLAGS, micUsage, parseMicConfig, type MicConfig } from '../../src/mic/config.js';

const ENV = { MIC_POD_NAMESPACE: 'aad-pod-identity', HOSTNAME: 'mic-7d9f-abcde' };

function config(argv: string[], env: Record<string, string | undefined> = ENV): MicConfig {
  const r = parseMicConfig(argv, env);
  if (!r.ok) throw new Error(`unexpected errors: ${r.errors.join('; ')}`);
  return r.value;
}
function errors(argv: string[], env: Record<string, string | undefined> = ENV): readonly string[] {
  const r = parseMicConfig(argv, env);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}

describe('parseMicConfig', () => {
  it('parses the credential policy flags: off and empty by default, authorities as https origins', () => {
    expect(config([]).allowCrossNamespaceSecrets).toBe(false);
    expect(config([]).allowedAdEndpoints).toEqual([]);
    const c = config(['--allow-cross-namespace-secrets', '--allowed-ad-endpoints=https://ADFS.example/adfs/, https://127.0.0.1:8443']);
    expect(c.allowCrossNamespaceSecrets).toBe(true);
    expect(c.allowedAdEndpoints).toEqual(['https://adfs.example', 'https://127.0.0.1:8443']);
    expect(errors(['--allowed-ad-endpoints=http://adfs.example'])).toEqual(['--allowed-ad-endpoints: "http://adfs.example" does not use https']);
    expect(errors(['--allowed-ad-endpoints=https://u:p@adfs.example'])).toEqual(['--allowed-ad-endpoints: an authority URL must not carry user information']);
  });

  it("keeps every default of the original MIC (v1.8.17 cmd/mic/main.go), except the documented QPS", () => {
    const c = config([]);
    expect(c).toMatchObject({
      kubeconfig: undefined,
      cloudconfig: undefined,
      forceNamespaced: false,
      version: false,
      syncRetryMs: 3600 * 1000,
      httpProbePort: 8080,
      prometheusPort: 8888,
      enableProfile: false,
      enableScaleFeatures: false,
      createDeleteBatch: 20,
      immutableUserMsis: [],
      profilePort: 6060,
      ignoredFlags: [],
      updateUserMsiMaxRetry: 2,
      updateUserMsiRetryIntervalMs: 1000,
      identityAssignmentReconcileIntervalMs: 3 * 60 * 1000,
      customUserAgent: '',
      logFormat: 'text',
      logVerbosity: 0,
      podNamespace: 'aad-pod-identity',
    });
    expect(c.leaderElection).toEqual({
      instance: 'mic-7d9f-abcde',
      namespace: 'default',
      name: 'aad-pod-identity-mic',
      durationMs: 15_000,
      renewDeadlineMs: 7500,
      retryPeriodMs: 3750,
      // Ours: the original's Endpoints lock and a Lease, both held (client-go's multi-lock).
      resourceLock: 'endpointsleases',
    });
    // Ours: the original's 5 QPS / burst 5 throttled MIC at scale.
    expect(c.clientQps).toBe(50);
    expect(c.clientBurst).toBe(100);
    expect(c.armEndpoint).toBeUndefined();
    expect(c.armMaxConcurrency).toBe(10);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.leaderElection)).toBe(true);
  });

  it('refuses the type-upgrade flags with what to do instead, and accepts --enable-type-upgrade=false', () => {
    for (const flag of ['--config-map-name=aad-pod-identity-config', '--type-upgrade-status-key=type-upgrade-status', '--enable-type-upgrade', '--enable-type-upgrade=true']) {
      const errs = errors([flag]);
      expect(errs).toHaveLength(1);
      expect(errs[0]).toMatch(/no longer supported: MIC does no one-time type upgrade; it reads the pre-v1\.6 capitalised fields/);
      expect(errs[0]).toContain('docs/migrating.md');
    }
    // The space-separated form does not leave its value behind as a stray argument.
    expect(errors(['--config-map-name', 'x'])).toHaveLength(1);
    expect(config(['--enable-type-upgrade=false']).ignoredFlags).toEqual([]);
  });

  it("accepts klog's logging flags, warning about those set (not --logtostderr), and --enableProfile with its port", () => {
    const c = config([
      '--logtostderr',
      '--vmodule=mic=4',
      '--log_backtrace_at=mic.go:1',
      '--log_file_max_size=10',
      '--one_output',
      '--skip_log_headers=true',
      '--enableProfile',
      '--profile-port=6061',
    ]);
    expect(c.ignoredFlags).toEqual(['--log_backtrace_at', '--log_file_max_size', '--one_output', '--skip_log_headers', '--vmodule']);
    expect(c.enableProfile).toBe(true);
    expect(c.profilePort).toBe(6061);
  });

  it("accepts the original manifests' and chart's arguments", () => {
    const c = config([
      '--cloudconfig=/etc/kubernetes/azure.json',
      '--logtostderr',
      '--v=0',
      '--http-probe-port=8080',
      '--prometheus-port=8888',
      '--syncRetryDuration=3600s',
      '--leader-election-instance=mic-a',
      '--leader-election-namespace=kube-system',
      '--leader-election-name=aad-pod-identity-mic',
      '--leader-election-duration=15s',
      '--immutable-user-msis=AAAA-1,bbbb-2',
      '--createDeleteBatch=20',
      '--clientQps=5',
      '--update-user-msi-max-retry=2',
      '--update-user-msi-retry-interval=1s',
      '--identity-assignment-reconcile-interval=3m',
      '--log-format=json',
      '--custom-user-agent=e2e',
      '--enableScaleFeatures=true',
    ]);
    expect(c.cloudconfig).toBe('/etc/kubernetes/azure.json');
    expect(c.leaderElection.instance).toBe('mic-a');
    expect(c.leaderElection.namespace).toBe('kube-system');
    expect(c.immutableUserMsis).toEqual(['aaaa-1', 'bbbb-2']);
    expect(c.clientQps).toBe(5);
    expect(c.logFormat).toBe('json');
    expect(c.customUserAgent).toBe('e2e');
  });

  it('turns namespaced mode on from FORCENAMESPACED=true even when the flag says false, as the original ORs them', () => {
    expect(config([], { ...ENV, FORCENAMESPACED: 'true' }).forceNamespaced).toBe(true);
    expect(config(['--forceNamespaced=false'], { ...ENV, FORCENAMESPACED: 'true' }).forceNamespaced).toBe(true);
    expect(config([], { ...ENV, FORCENAMESPACED: 'yes' }).forceNamespaced).toBe(false);
    expect(config(['--forceNamespaced']).forceNamespaced).toBe(true);
  });

  it('requires MIC_POD_NAMESPACE with a message that says how to set it', () => {
    expect(errors([], { HOSTNAME: 'h' })).toEqual([
      'MIC_POD_NAMESPACE is not set: add the pod namespace as env MIC_POD_NAMESPACE (valueFrom fieldRef metadata.namespace)',
    ]);
  });

  it('lets --help and --version through without the environment a pod has', () => {
    const help = parseMicConfig(['--help'], {});
    expect(help.ok && help.value.help).toBe(true);
    const version = parseMicConfig(['--version'], {});
    expect(version.ok && version.value.version).toBe(true);
  });

  it('derives renew deadline and retry period from the duration unless given, and checks their order', () => {
    const c = config(['--leader-election-duration=2s']);
    expect(c.leaderElection.renewDeadlineMs).toBe(1000);
    expect(c.leaderElection.retryPeriodMs).toBe(500);
    const fast = config([
      '--leader-election-duration=600ms',
      '--leader-election-renew-deadline=400ms',
      '--leader-election-retry-period=100ms',
    ]);
    expect(fast.leaderElection).toMatchObject({ durationMs: 600, renewDeadlineMs: 400, retryPeriodMs: 100 });
    expect(errors(['--leader-election-duration=10s', '--leader-election-renew-deadline=10s'])).toContain(
      '--leader-election-renew-deadline: must be shorter than --leader-election-duration',
    );
    expect(errors(['--leader-election-renew-deadline=5s', '--leader-election-retry-period=5s'])).toContain(
      '--leader-election-retry-period: must be shorter than --leader-election-renew-deadline / 1.2',
    );
  });

  it('requires an https --arm-endpoint, since the ARM clients will not send tokens over http', () => {
    expect(config(['--arm-endpoint=https://127.0.0.1:4443/']).armEndpoint).toBe('https://127.0.0.1:4443');
    expect(errors(['--arm-endpoint=http://127.0.0.1:4443'])).toEqual([
      "--arm-endpoint: expected an absolute https URL, got 'http://127.0.0.1:4443'",
    ]);
  });

  it('needs a leader election identity', () => {
    expect(errors([], { MIC_POD_NAMESPACE: 'ns' })).toEqual([
      '--leader-election-instance: empty, and env HOSTNAME is not set to default it',
    ]);
  });

  it('rejects bad values with the flag named', () => {
    expect(errors(['--clientQps=abc'])).toEqual(["--clientQps: expected a positive number, got 'abc'"]);
    expect(errors(['--log-format=xml'])).toEqual(["--log-format: expected one of text, json, got 'xml'"]);
    expect(errors(['--syncRetryDuration=0'])).toEqual(["--syncRetryDuration: expected a duration of at least 1ms, got '0'"]);
  });

  it('documents every flag in --help', () => {
    const text = micUsage();
    for (const def of Object.values(MIC_FLAGS)) expect(text).toContain(`--${def.name}`);
  });
});
