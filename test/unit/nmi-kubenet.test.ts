// The kubenet guard's readings (issue 10 row 13): every way pflag and a systemd EnvironmentFile let a kubelet be told
// --network-plugin=kubenet, and the CNI network a runtime would pick.
import { describe, expect, it } from 'vitest';
import {
  activeCniNetwork,
  isKubenetShaped,
  kubenetInKubeletDefaults,
  networkPluginFromArgs,
  networkPluginsInKubeletDefaults,
  parseEnvironmentFile,
  splitWords,
} from '../../src/nmi/core/kubenet.js';

const AKS_KUBENET_CONFLIST = JSON.stringify({
  cniVersion: '0.3.1',
  name: 'kubenet',
  plugins: [
    { type: 'bridge', bridge: 'cbr0', mtu: 1500, addIf: 'eth0', isGateway: true, ipMasq: false, promiscMode: true, hairpinMode: false, ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }] } },
    { type: 'portmap', capabilities: { portMappings: true }, externalSetMarkChain: 'KUBE-MARK-MASQ' },
  ],
});
const AZURE_CNI_CONFLIST = JSON.stringify({
  cniVersion: '0.3.0',
  name: 'azure',
  plugins: [{ type: 'azure-vnet', mode: 'transparent', ipam: { type: 'azure-vnet-ipam' } }, { type: 'portmap', capabilities: { portMappings: true }, snat: true }],
});
const CALICO_CONFLIST = JSON.stringify({
  name: 'k8s-pod-network',
  cniVersion: '0.3.1',
  plugins: [{ type: 'calico', ipam: { type: 'host-local', subnet: 'usePodCidr' } }, { type: 'portmap', snat: true, capabilities: { portMappings: true } }],
});

describe('the kubenet guard: kubelet flags', () => {
  it.each([
    ['KUBELET_FLAGS=--network-plugin=kubenet'],
    ['KUBELET_FLAGS=--network-plugin kubenet'],
    ['KUBELET_FLAGS=--network-plugin="kubenet"'],
    ["KUBELET_FLAGS=--network-plugin='kubenet'"],
    ['KUBELET_FLAGS=--network_plugin=kubenet'],
    ['KUBELET_FLAGS="--address=0.0.0.0 --network-plugin=kubenet --max-pods=110"'],
    ["KUBELET_FLAGS='--network-plugin kubenet'"],
    ['KUBELET_FLAGS="--network-plugin=\\"kubenet\\""'],
    ['KUBELET_FLAGS=--network-plugin=\\\nkubenet'],
    ['KUBELET_FLAGS=--network-plugin \\\n  kubenet'],
    ['KUBELET_FLAGS=--a=b \\\n --network-plugin=kubenet'],
    ['KUBELET_FLAGS="--a=b\n --network-plugin=kubenet"'],
    ['export KUBELET_FLAGS=--network-plugin=kubenet'],
    ['  KUBELET_FLAGS = --network-plugin=kubenet'],
    ['KUBELET_FLAGS=--network-plugin=cni --network-plugin=kubenet'],
    ['KUBELET_FLAGS=--network-plugin=kube"net"'],
    ['KUBELET_FLAGS=--network-plugin=kubenet\r\n'],
    ['KUBELET_NODE_LABELS=a=b\nKUBELET_FLAGS=--cgroups-per-qos=true\t--network-plugin\tkubenet'],
    ['/usr/local/bin/kubelet --network-plugin=kubenet'],
    ['KUBELET_FLAGS=--network-plugin=cni\nKUBELET_EXTRA_ARGS=--network-plugin=kubenet'],
  ])('finds kubenet in %j', (text) => {
    expect(kubenetInKubeletDefaults(text)).toBeDefined();
  });

  it.each([
    [''],
    ['KUBELET_FLAGS=--network-plugin=cni'],
    ['KUBELET_FLAGS=--network-plugin=kubenet --network-plugin=cni'],
    ['KUBELET_FLAGS=--network-plugin=kubenet --network-plugin='],
    ['KUBELET_FLAGS=--network-plugin=kubenet\nKUBELET_FLAGS=--network-plugin=cni'],
    ['# KUBELET_FLAGS=--network-plugin=kubenet'],
    ['; KUBELET_FLAGS=--network-plugin=kubenet'],
    ['KUBELET_FLAGS=-network-plugin=kubenet'],
    ['KUBELET_FLAGS=--network-plugin-mtu=1500 --x=--network-plugin=kubenet'],
    ['KUBELET_FLAGS=-- --network-plugin=kubenet'],
    ['KUBELET_FLAGS=--network-plugin=Kubenet'],
    ['KUBELET_FLAGS=--network-plugin=kubenet2'],
    ['KUBELET_FLAGS=--network-plugin'],
    ['KUBELET_FLAGS=--cni-conf-dir=/etc/cni/kubenet'],
  ])('does not find kubenet in %j', (text) => {
    expect(kubenetInKubeletDefaults(text)).toBeUndefined();
  });

  it('names where the flag was read, per variable and per bare line', () => {
    expect(networkPluginsInKubeletDefaults('A=--network-plugin=cni\nB=--x\n--network-plugin kubenet\n')).toEqual([
      { where: 'A', plugin: 'cni' },
      { where: 'line 3', plugin: 'kubenet' },
    ]);
  });

  it('reads pflag forms: =value, the next argument, empty, underscores, the last occurrence, -- stops', () => {
    expect(networkPluginFromArgs(['--network-plugin=kubenet'])).toBe('kubenet');
    expect(networkPluginFromArgs(['--network-plugin', 'kubenet'])).toBe('kubenet');
    expect(networkPluginFromArgs(['--network-plugin', '--x'])).toBe('--x');
    expect(networkPluginFromArgs(['--network-plugin='])).toBe('');
    expect(networkPluginFromArgs(['--network_plugin', 'kubenet'])).toBe('kubenet');
    expect(networkPluginFromArgs(['--network-plugin=a', '--network-plugin', 'b'])).toBe('b');
    expect(networkPluginFromArgs(['--network-plugin=a', '--', '--network-plugin=b'])).toBe('a');
    expect(networkPluginFromArgs(['-network-plugin=kubenet', '-n', 'kubenet'])).toBeUndefined();
    expect(networkPluginFromArgs(['--network-plugin'])).toBeUndefined();
    expect(networkPluginFromArgs(['kubelet', 'x', '--network-plugin=k=v'])).toBe('k=v');
  });

  it('splits words as a unit expands $VAR: quotes removed, escapes honoured', () => {
    expect(splitWords(`a  'b c' "d \\"e\\"" f\\ g h"i"j ''`)).toEqual(['a', 'b c', 'd "e"', 'f g', 'hij', '']);
    expect(splitWords('')).toEqual([]);
    expect(splitWords('"unterminated')).toEqual(['unterminated']);
  });

  it('parses an EnvironmentFile: comments, quotes across lines, continuations, bare lines', () => {
    const text = '# c\nA=1\n; c\nB="x\ny" \nC=p\\\nq\n  bare words here\nexport D=\'z\'\n';
    expect(parseEnvironmentFile(text)).toEqual([
      { name: 'A', value: '1', line: 2 },
      { name: 'B', value: 'x\ny', line: 4 },
      { name: 'C', value: 'pq', line: 6 },
      { name: undefined, value: 'bare words here', line: 8 },
      { name: 'D', value: 'z', line: 9 },
    ]);
  });
});

describe('the kubenet guard: the CNI network', () => {
  it('recognises the AKS kubenet conflist and the kubelet kubenet .conf, and not Azure CNI or Calico', () => {
    const kubenet = activeCniNetwork([{ name: '10-containerd-net.conflist', text: AKS_KUBENET_CONFLIST }]).network;
    expect(kubenet).toEqual({ file: '10-containerd-net.conflist', name: 'kubenet', pluginTypes: ['bridge', 'portmap'] });
    expect(isKubenetShaped(kubenet!)).toBe(true);
    const single = activeCniNetwork([{ name: 'kubenet.conf', text: JSON.stringify({ cniVersion: '0.1.0', name: 'kubenet', type: 'bridge', bridge: 'cbr0' }) }]);
    expect(isKubenetShaped(single.network!)).toBe(true);
    expect(isKubenetShaped(activeCniNetwork([{ name: '10-azure.conflist', text: AZURE_CNI_CONFLIST }]).network!)).toBe(false);
    expect(isKubenetShaped(activeCniNetwork([{ name: '10-calico.conflist', text: CALICO_CONFLIST }]).network!)).toBe(false);
  });

  it('takes the first valid file by name, as the runtime does, skipping broken and foreign files', () => {
    const picked = activeCniNetwork([
      { name: '20-bridge.conflist', text: AKS_KUBENET_CONFLIST },
      { name: '10-calico.conflist', text: CALICO_CONFLIST },
      { name: '05-broken.conflist', text: '{not json' },
      { name: '06-empty.conflist', text: '{"name":"x","plugins":[]}' },
      { name: '07-untyped.conf', text: '{"name":"x"}' },
      { name: '08-array.json', text: '[]' },
      { name: '00-readme.txt', text: AKS_KUBENET_CONFLIST },
      { name: 'calico-kubeconfig', text: '' },
    ]);
    expect(picked.network?.file).toBe('10-calico.conflist');
    expect(picked.skipped).toEqual([
      { file: '05-broken.conflist', reason: 'not JSON' },
      { file: '06-empty.conflist', reason: 'no plugins' },
      { file: '07-untyped.conf', reason: 'a plugin without a type' },
      { file: '08-array.json', reason: 'not a JSON object' },
    ]);
    const kubenetFirst = activeCniNetwork([
      { name: '99-azure.conflist', text: AZURE_CNI_CONFLIST },
      { name: '10-containerd-net.conflist', text: AKS_KUBENET_CONFLIST },
    ]);
    expect(isKubenetShaped(kubenetFirst.network!)).toBe(true);
  });

  it('reads a .conflist-shaped .json as one plugin without a type (the runtime rejects it too)', () => {
    expect(activeCniNetwork([{ name: '10-x.json', text: AKS_KUBENET_CONFLIST }]).network).toBeUndefined();
  });

  it('finds no network in an empty or unrelated directory', () => {
    expect(activeCniNetwork([])).toEqual({ network: undefined, skipped: [] });
  });
});
