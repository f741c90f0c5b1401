// The service-account issuer read from the API emulator's discovery document, exactly as its tokens carry it.
import { afterEach, describe, expect, it } from 'vitest';
import { discoverServiceAccountIssuer, IssuerDiscoveryError } from '../../src/kube/issuer.js';
import { startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';

describe('discoverServiceAccountIssuer', () => {
  let world: TestApiServer | undefined;
  afterEach(async () => {
    await world?.stop();
    world = undefined;
  });

  it("returns the API server's own issuer", async () => {
    world = await startTestApiServer({ tls: true });
    expect(await discoverServiceAccountIssuer(world.kc)).toBe(world.server.serviceAccountIssuer.issuer);
  });

  it('keeps an AKS-style issuer byte for byte, trailing slash included', async () => {
    const issuer = 'https://westeurope.oic.prod-aks.azure.com/tenant/abc/';
    world = await startTestApiServer({ tls: true, serviceAccountIssuer: issuer, serviceAccountJwksUri: `${issuer}openid/v1/jwks` });
    expect(await discoverServiceAccountIssuer(world.kc)).toBe(issuer);
  });

  it('says to configure the issuer when the API server publishes no discovery (plain http issuer)', async () => {
    world = await startTestApiServer();
    const err = await discoverServiceAccountIssuer(world.kc).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IssuerDiscoveryError);
    expect((err as Error).message).toMatch(/publishes no service-account issuer discovery .*configure the issuer URL explicitly$/);
  });
});
