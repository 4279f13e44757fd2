// A transform: every published event must carry an explicit `type` and JSON
// object data; the whole publish is refused (422) otherwise, naming the bad
// events. Accepted events get `received_at` (the host's wall clock, ms) and,
// if configured, `source` added to their data.
//
//   [plugins.require-json]
//   use = "require-json.wasm"
//   config = { source = "api" }          # optional
//
//   [publish]
//   transforms = ["require-json"]
import { transform, deny, clock } from '@spout/sdk';

export default transform({
  name: 'require-json',
  version: '0.1.0',
  configSchema: {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    type: 'object',
    properties: { source: { type: 'string', description: 'Added to every event as `source`.' } },
    additionalProperties: false,
  },
  init(config) {
    for (const key of Object.keys(config)) if (key !== 'source') throw `config: unknown key \`${key}\``;
    if (config.source !== undefined && typeof config.source !== 'string') throw 'config key `source`: expected a string';
    this.source = config.source;
  },
  apply(events) {
    const problems = [];
    for (const e of events) {
      if (e.type === 'message') problems.push(`event #${e.index}: no \`type\``);
      let data;
      try {
        data = e.json();
      } catch {
        problems.push(`event #${e.index}: data is not JSON`);
        continue;
      }
      if (data === null || typeof data !== 'object' || Array.isArray(data)) {
        problems.push(`event #${e.index}: data is not a JSON object`);
        continue;
      }
      data.received_at = clock.wallMs();
      if (this.source !== undefined) data.source = this.source;
      e.data = data;
    }
    if (problems.length) throw deny(422, problems.join('; '));
    return events;
  },
});
