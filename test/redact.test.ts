/** Secrets never written: the redaction used by the answer cache, the LLM expert, logs and error lines. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { REDACTED, redactDeep, redactSecrets, registerSecret, urlWithoutCredentials } from '../src/util/redact.js';

test('redactSecrets: bearer tokens, Authorization values, sk- keys, key fields and URL credentials', () => {
  const cases: [string, string][] = [
    ['HTTP 401: Incorrect API key provided: Bearer sk-live-0123456789abcdef', 'sk-live-0123456789abcdef'],
    ['Incorrect API key provided: sk-proj-AbCdEf012345', 'AbCdEf012345'],
    ['authorization: Basic dXNlcjpzM2NyM3Q=', 'dXNlcjpzM2NyM3Q='],
    ['{"Authorization":"Bearer abc.def.ghi"}', 'abc.def.ghi'],
    ['x-api-key: k-9f8e7d6c5b', 'k-9f8e7d6c5b'],
    ['GET /v1?api_key=QWERTY123&x=1', 'QWERTY123'],
    ['"password": "hunter22"', 'hunter22'],
    ['fetch http://alice:s3cr3t-pw@127.0.0.1:8000/v1/chat/completions failed', 's3cr3t-pw'],
    ['https://ghp_tokentokentoken@example.com/repo', 'ghp_tokentokentoken'],
  ];
  for (const [text, secret] of cases) {
    const out = redactSecrets(text);
    assert.ok(!out.includes(secret), `${text} -> ${out}`);
    assert.ok(out.includes(REDACTED), out);
  }
  // Ordinary text, captions and URLs without credentials are left alone.
  for (const text of [
    'There are two small red circles above a large blue star.',
    'HTTP 400: image too large',
    'http://127.0.0.1:8000/v1/chat/completions',
    'the bearer of the red star',
  ]) {
    assert.equal(redactSecrets(text), text);
  }
});

test('registered secrets are redacted whatever their shape; redactDeep walks objects; URLs lose credentials', () => {
  registerSecret('plain-looking-key-42');
  registerSecret('abc'); // too short to be a secret worth matching everywhere
  assert.equal(redactSecrets('echo: plain-looking-key-42!'), `echo: ${REDACTED}!`);
  assert.equal(redactSecrets('abc'), 'abc');
  assert.deepEqual(
    redactDeep({ kind: 'error', status: 401, reason: 'Bearer sk-0123456789', list: ['plain-looking-key-42', 3] }),
    {
      kind: 'error',
      status: 401,
      reason: `Bearer ${REDACTED}`,
      list: [REDACTED, 3],
    },
  );
  assert.equal(urlWithoutCredentials('http://u:p@host:1/x'), 'http://host:1/x');
  assert.equal(urlWithoutCredentials('http://host/x'), 'http://host/x');
});
