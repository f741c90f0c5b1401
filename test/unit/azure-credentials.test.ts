import type { AccessToken, TokenCredential } from '@azure/core-auth';
import type { HttpClient, PipelineRequest, PipelineResponse } from '@azure/core-rest-pipeline';
import { describe, expect, it } from 'vitest';
import { redirectingHttpClient, TokenTimeoutError, withTokenTimeout } from '../../src/azure/credentials.js';

describe('withTokenTimeout', () => {
  it('passes a token through', async () => {
    const token: AccessToken = { token: 't', expiresOnTimestamp: 1 };
    const cred: TokenCredential = { getToken: async () => token };
    await expect(withTokenTimeout(cred, 1000).getToken('s')).resolves.toBe(token);
  });

  it('rejects with TokenTimeoutError when the inner credential never answers, and aborts it', async () => {
    let signal: { aborted: boolean } | undefined;
    const cred: TokenCredential = {
      getToken: (_s, opts) => {
        signal = opts?.abortSignal;
        return new Promise(() => {});
      },
    };
    await expect(withTokenTimeout(cred, 20).getToken('s')).rejects.toBeInstanceOf(TokenTimeoutError);
    expect(signal?.aborted).toBe(true);
  });

  it('passes the inner error through', async () => {
    const cred: TokenCredential = { getToken: async () => Promise.reject(new Error('invalid_client')) };
    await expect(withTokenTimeout(cred, 1000).getToken('s')).rejects.toThrow('invalid_client');
  });
});

describe('redirectingHttpClient', () => {
  it('rewrites only requests for the IMDS origin', async () => {
    const seen: string[] = [];
    const inner: HttpClient = {
      sendRequest: async (req: PipelineRequest) => {
        seen.push(req.url);
        return { status: 200, headers: {} as PipelineResponse['headers'], request: req };
      },
    };
    const client = redirectingHttpClient('http://169.254.169.254', 'http://127.0.0.1:9999/', inner);
    await client.sendRequest({ url: 'http://169.254.169.254/metadata/identity/oauth2/token?x=1' } as PipelineRequest);
    await client.sendRequest({ url: 'https://login.example/token' } as PipelineRequest);
    expect(seen).toEqual(['http://127.0.0.1:9999/metadata/identity/oauth2/token?x=1', 'https://login.example/token']);
  });
});
