// A throwaway CA and a server certificate for the API server emulator (127.0.0.1/localhost by default).

import { createCaAndServerCertificate, type AltName, type TlsMaterial } from '../tls.js';

export type ServerTls = TlsMaterial;

export function generateServerTls(hosts: readonly string[] = ['127.0.0.1', 'localhost']): ServerTls {
  return createCaAndServerCertificate({
    caCommonName: 'sandbox-apiserver-ca',
    serverCommonName: 'kube-apiserver',
    altNames: hosts.map(altName),
    backdateMs: 60 * 60 * 1000,
  });
}

function altName(host: string): AltName {
  return /^[\d.]+$/.test(host) || host.includes(':') ? { type: 7, ip: host } : { type: 2, value: host };
}
