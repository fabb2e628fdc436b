/**
 * Secrets never written: API keys, Authorization values (Bearer, Basic, ...), `sk-...` style
 * keys, `api_key=`-style fields and the credentials of a URL (`user:password@`) are replaced by
 * [REDACTED] in whatever we persist or print: Stage II answer-cache lines, logs, error
 * messages. An endpoint that echoes the key in its error ("Incorrect API key provided:
 * Bearer sk-...") or a base URL with a password must not leave them in reviews.jsonl or on a
 * terminal. Patterns catch the usual shapes; the keys we actually hold are also registered
 * (registerSecret) and replaced wherever they appear, whatever their shape.
 */

export const REDACTED = '[REDACTED]';

const known = new Set<string>();

/** Redacts this exact value from now on (e.g. the API key read from the environment). Short values are ignored. */
export function registerSecret(value: string | undefined | null): void {
  if (value && value.length >= 6) known.add(value);
}

type Rule = [RegExp, string | ((...m: string[]) => string)];

/** Names of headers and fields whose value is a secret (a regular expression alternation). */
const SECRET_NAMES = [
  'authorization',
  'proxy-authorization',
  'x-api-key',
  'api[_-]?key',
  'access[_-]?token',
  'refresh[_-]?token',
  'client[_-]?secret',
  'secret',
  'password',
  'passwd',
].join('|');

const RULES: Rule[] = [
  // Header-style values: "Authorization: Bearer abc", "authorization=abc", "x-api-key": "abc".
  [
    new RegExp(
      `\\b(${SECRET_NAMES})(["']?\\s*[:=]\\s*["']?)(?:(bearer|basic|token|digest)\\s+)?[^\\s"'&,;})\\]]+`,
      'gi',
    ),
    (_m, name, sep, scheme) => `${name}${sep}${scheme ? `${scheme} ` : ''}${REDACTED}`,
  ],
  // A bearer/basic token anywhere ("... provided: Bearer abc").
  [/\b(bearer|basic)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=*-]{6,}/gi, `$1 ${REDACTED}`],
  // OpenAI / Anthropic style keys: sk-..., sk-proj-..., sk-ant-... (also partly masked ones).
  [/\bsk-[A-Za-z0-9][A-Za-z0-9_*-]{5,}/g, REDACTED],
  // URL credentials: scheme://user:password@host or scheme://token@host.
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]+@/gi, `$1${REDACTED}@`],
];

/** `text` with every secret it contains replaced by [REDACTED]. */
export function redactSecrets(text: string): string {
  let out = text;
  for (const secret of known) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  for (const [re, by] of RULES) out = out.replace(re, by as string);
  return out;
}

/** A copy of `value` with redactSecrets applied to every string in it (objects and arrays walked). */
export function redactDeep<T>(value: T): T {
  if (typeof value === 'string') return redactSecrets(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => redactDeep(v)) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactDeep(v);
    return out as T;
  }
  return value;
}

/** A URL without its credentials (for messages), or the input redacted when it is not a URL. */
export function urlWithoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return redactSecrets(url);
  }
}
