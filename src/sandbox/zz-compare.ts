import { X509Certificate } from 'node:crypto';
import * as oa from './old-api.js';
import * as oc from './old-cloud.js';
import * as na from './apiserver/tls.js';
import * as nc from './cloud/tls.js';
function desc(m: { caPem: string; certPem: string; keyPem: string }) {
  const ca = new X509Certificate(m.caPem), c = new X509Certificate(m.certPem);
  return { ca: [ca.subject, ca.issuer, ca.ca, ca.keyUsage, Date.parse(ca.validTo) - Date.parse(ca.validFrom)], cert: [c.subject, c.issuer, c.subjectAltName, c.ca, c.keyUsage, c.checkIssued(ca), c.verify(ca.publicKey), Date.parse(c.validTo)-Date.parse(c.validFrom), c.toLegacyObject().ext_key_usage], keyhead: m.keyPem.split('\n')[0], ext: c.toLegacyObject().infoAccess };
}
for (const hosts of [undefined, ['10.0.0.1', '127.0.0.1', 'localhost'], ['::1', 'foo.example']]) {
  console.log(JSON.stringify(desc(oa.generateServerTls(hosts))) === JSON.stringify(desc(na.generateServerTls(hosts))), JSON.stringify(desc(na.generateServerTls(hosts))));
}
for (const hosts of [undefined, ['0.0.0.0'], ['10.0.0.1', 'foo.example', '::1']]) {
  console.log(JSON.stringify(desc(oc.createTlsMaterial(hosts))) === JSON.stringify(desc(nc.createTlsMaterial(hosts))), JSON.stringify(desc(nc.createTlsMaterial(hosts))));
}
