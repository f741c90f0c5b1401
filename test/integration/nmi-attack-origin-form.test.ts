// Attack row 7 of the tenant-isolation threat model, performed for real: a pod on the node sends request targets that
// are not origin-form (absolute-form, `//host/...`, `/\host/...`, authority-form, `*`) over a raw socket, hoping that
// NMI routes on a path that still holds scheme and host, or forwards the raw target to IMDS. Every one must be
// refused with 400, and the IMDS emulator must not receive any request at all while they are sent, with or without
// `--block-instance-metadata`. The pod's ordinary token request keeps working afterwards.

import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldIdentity, type WorldPod } from '../helpers/nmi-world.js';

const TARGETS = [
  'http://169.254.169.254/metadata/instance?api-version=2021-02-01',
  'HTTP://169.254.169.254/metadata/instance?api-version=2021-02-01',
  'http://169.254.169.254/metadata/identity/oauth2/token?resource=https%3A%2F%2Fvault.azure.net',
  '//169.254.169.254/metadata/instance?api-version=2021-02-01',
  '//169.254.169.254/metadata/identity/oauth2/token?resource=https%3A%2F%2Fvault.azure.net',
  '/\\169.254.169.254/metadata/instance?api-version=2021-02-01',
  'http:/metadata/instance',
  'http://attacker.example/metadata/instance',
];

/** Sends one raw HTTP/1.1 request from `from` and returns the status line's code and the whole answer. */
function raw(port: number, from: string, head: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: from }, () => socket.write(head));
    let text = '';
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer to ${JSON.stringify(head.split('\r\n')[0])}`)));
    socket.on('data', (d) => (text += d.toString('latin1')));
    socket.on('end', () => resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0), text }));
    socket.on('error', reject);
  });
}

for (const blockInstanceMetadata of [true, false]) {
  describe(`row 7: non-origin-form targets never reach IMDS (--block-instance-metadata=${blockInstanceMetadata})`, () => {
    let world: NmiWorld;
    let pod: WorldPod;
    let identity: WorldIdentity;
    let port: number;

    beforeAll(async () => {
      world = await startNmiWorld({ nmi: { blockInstanceMetadata } });
      pod = await world.pod('attacker', '127.0.7.2');
      identity = await world.managedIdentity('attacker-id');
      await world.assign(pod, identity);
      port = Number(new URL(world.nmiUrl).port);
    }, 30_000);
    afterAll(async () => {
      await world?.stop();
    });

    it('answers 400 to every one and sends IMDS nothing', async () => {
      world.azure.emulator.clearRequestLog();
      for (const target of TARGETS) {
        const answer = await raw(port, pod.ip, `GET ${target} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n`);
        expect({ target, status: answer.status }).toEqual({ target, status: 400 });
        expect(answer.text).not.toContain('access_token');
        expect(answer.text).not.toContain('"compute"');
      }
      for (const target of ['169.254.169.254:80', '*']) {
        const answer = await raw(port, pod.ip, `GET ${target} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n`);
        expect(answer.status, target).toBeGreaterThanOrEqual(400);
        expect(answer.status, target).toBeLessThan(500);
      }
      expect(world.azure.emulator.requestLog()).toEqual([]);
    });

    it('still serves the pod its own token on the origin-form path', async () => {
      const reply = await world.call(pod.ip, `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`);
      expect(decodeToken(accessTokenOf(reply)).appid).toBe(identity.clientId);
    });
  });
}
