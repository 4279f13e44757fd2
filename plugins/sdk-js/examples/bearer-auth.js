// An auth plugin: accepts `Authorization: Bearer <token>` for the tokens
// listed in config, each with its user and topic selectors; publishing
// (any method but GET/HEAD/OPTIONS) needs `publish = true`.
//
//   [plugins.bearer]
//   use = "bearer-auth.wasm"
//   config = { tokens = [
//     { token = "s3cret-ann", user = "ann", topics = ["docs/**"] },
//     { token = "s3cret-ops", user = "ops", topics = ["**"], publish = true },
//   ] }
import { auth, deny } from '@spout/sdk';

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Compares two strings in time that depends on their lengths only. */
function same(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export default auth({
  name: 'bearer-auth',
  version: '0.1.0',
  configSchema: {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    type: 'object',
    required: ['tokens'],
    additionalProperties: false,
    properties: {
      tokens: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          required: ['token', 'user'],
          additionalProperties: false,
          properties: {
            token: { type: 'string', minLength: 16, description: 'The bearer token.' },
            user: { type: 'string', minLength: 1, description: 'User id of the principal.' },
            topics: { type: 'array', items: { type: 'string' }, description: 'Topic selectors it may reach.' },
            publish: { type: 'boolean', description: 'Whether it may publish.' },
          },
        },
      },
    },
  },
  init(config) {
    if (!Array.isArray(config.tokens) || config.tokens.length === 0) throw 'config key `tokens`: list at least one token';
    this.tokens = config.tokens.map((t, i) => {
      if (typeof t.token !== 'string' || t.token.length < 16) throw `config key \`tokens[${i}].token\`: at least 16 characters`;
      if (typeof t.user !== 'string' || t.user === '') throw `config key \`tokens[${i}].user\`: a non-empty string`;
      return { token: t.token, user: t.user, topics: (t.topics ?? []).map(String), publish: t.publish === true };
    });
  },
  authenticate(req) {
    const header = req.header('authorization');
    const m = header && /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw deny(401, 'missing `Authorization: Bearer <token>`');
    let found;
    for (const t of this.tokens) if (same(t.token, m[1])) found = t; // no early exit
    if (!found) throw deny(401, 'unknown token');
    if (!READS.has(req.method) && !found.publish) throw deny(403, `${found.user} may not publish`);
    return { user: found.user, topics: found.topics, claims: { auth: 'bearer', publish: found.publish } };
  },
});
