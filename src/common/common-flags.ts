// Flags MIC and NMI both take, with the same name, default and help, and the checks both apply to them.
import type { FlagDefs, FlagValues } from './flags.js';

/** Shared by both components; each config spreads these into its own definitions. */
export const COMMON_FLAGS = {
  version: { kind: 'bool', name: 'version', default: false, help: 'Prints the version information and exits' },
  kubeconfig: { kind: 'string', name: 'kubeconfig', default: '', help: 'Path to the kube config (in-cluster config when empty)' },
  forceNamespaced: {
    kind: 'bool',
    name: 'forceNamespaced',
    default: false,
    help: 'Forces namespaced identities, binding, and assignment (also on with env FORCENAMESPACED=true)',
  },
  namespaceIdentityPolicy: {
    kind: 'string',
    name: 'namespace-identity-policy',
    default: 'off',
    choices: ['off', 'enforce'],
    help:
      'enforce: a namespace may use only the Azure identities its Namespace annotation aadpodidentity.k8s.io/permitted-identities ' +
      'lists (no annotation: none); off: any, as the original',
  },
  probeBindAddress: {
    kind: 'string',
    name: 'probe-bind-address',
    default: '',
    help: 'Address the probe server binds to (every interface when empty)',
  },
  metricsBindAddress: {
    kind: 'string',
    name: 'metrics-bind-address',
    default: '',
    help: 'Address the metrics server binds to (every interface when empty)',
  },
  enableProfile: {
    kind: 'bool',
    name: 'enableProfile',
    default: false,
    help: 'Serve profiles on 127.0.0.1:--profile-port only: GET /debug/pprof/profile?seconds=N (CPU, .cpuprofile) and /debug/pprof/heap (heap snapshot)',
  },
  profilePort: {
    kind: 'int',
    name: 'profile-port',
    default: 6060,
    min: 0,
    max: 65535,
    help: 'Port of the --enableProfile endpoint (always bound to 127.0.0.1; the original: localhost:6060)',
  },
  customUserAgent: {
    kind: 'string',
    name: 'custom-user-agent',
    default: '',
    help: 'User agent to append in addition to the pod identity component and versions',
  },
  logFormat: { kind: 'string', name: 'log-format', default: 'text', choices: ['text', 'json'], help: 'Sets the logging format' },
  v: { kind: 'int', name: 'v', default: 0, min: 0, help: 'Log verbosity (klog style: 0 info, 4 debug, 5 trace)' },
} as const satisfies FlagDefs;

export type CommonFlagValues = FlagValues<typeof COMMON_FLAGS>;

/** The settings both configs derive from the common flags alone. */
export interface CommonSettings {
  readonly version: boolean;
  /** Path to a kubeconfig; undefined means in-cluster. */
  readonly kubeconfig: string | undefined;
  /** `--forceNamespaced` or env FORCENAMESPACED=true (ORed, as the original). */
  readonly forceNamespaced: boolean;
  /** `--namespace-identity-policy`: 'enforce' makes MIC and NMI check the Namespace annotation (src/crds/namespace-policy.ts). */
  readonly namespaceIdentityPolicy: NamespaceIdentityPolicyMode;
  /** Host to bind the probe server to; '' means every interface, as the original's `:port`. */
  readonly probeBindAddress: string;
  readonly metricsBindAddress: string;
  readonly enableProfile: boolean;
  readonly profilePort: number;
  readonly customUserAgent: string;
  readonly logFormat: 'text' | 'json';
  /** klog-style verbosity from `-v`; 0 is info, higher is more detail. */
  readonly logVerbosity: number;
  /** klog flags given that have no effect here (`--vmodule`, ...), for the binaries' one warning at start. */
  readonly ignoredFlags: readonly string[];
}

export type NamespaceIdentityPolicyMode = 'off' | 'enforce';

export function commonSettings(
  f: CommonFlagValues,
  env: Readonly<Record<string, string | undefined>>,
  ignoredFlags: readonly string[] = [],
): CommonSettings {
  return {
    version: f.version,
    kubeconfig: f.kubeconfig === '' ? undefined : f.kubeconfig,
    forceNamespaced: f.forceNamespaced || env['FORCENAMESPACED'] === 'true',
    namespaceIdentityPolicy: f.namespaceIdentityPolicy === 'enforce' ? 'enforce' : 'off',
    probeBindAddress: f.probeBindAddress,
    metricsBindAddress: f.metricsBindAddress,
    enableProfile: f.enableProfile,
    profilePort: f.profilePort,
    customUserAgent: f.customUserAgent,
    logFormat: f.logFormat === 'json' ? 'json' : 'text',
    logVerbosity: f.v,
    ignoredFlags: Object.freeze([...ignoredFlags]),
  };
}

/** One error per bind address that cannot be a host (whitespace or a slash: a URL or CIDR given by mistake). */
export function bindAddressErrors(f: Pick<CommonFlagValues, 'probeBindAddress' | 'metricsBindAddress'>): string[] {
  const errors: string[] = [];
  for (const [flag, host] of [
    ['--probe-bind-address', f.probeBindAddress],
    ['--metrics-bind-address', f.metricsBindAddress],
  ] as const) {
    if (/[\s/]/.test(host)) errors.push(`${flag}: expected a host name or IP address, got '${host}'`);
  }
  return errors;
}
